package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// waitUntil checks cond every 50ms, printing progress every second, until
// it holds or ctx ends (an error naming ctx's cause and the last status).
func waitUntil(ctx context.Context, what string, cond func() (bool, string)) error {
	last := time.Now()
	for {
		ok, status := cond()
		if ok {
			return nil
		}
		if time.Since(last) >= time.Second {
			progress("%s: %s", what, status)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (%s)", what, context.Cause(ctx), status)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (l *loader) checkFiles(n int) error {
	if lim := nofileLimit(); lim > 0 && uint64(n)+64 > lim {
		return fmt.Errorf("%d polls need about %d open files in this process, but it may open %d (ulimit -n; hard limit %s): "+
			"use fewer polls, raise the limit, or run several lpload processes", n, n+64, lim, hardLimit())
	}
	return nil
}

// hold opens n polls over the channels, waits until they are held and
// reports the servers' RSS growth per held poll.
func (l *loader) hold(ctx context.Context) (map[string]any, error) {
	n := l.o.n
	if err := l.checkFiles(n); err != nil {
		return nil, err
	}
	curs := make([]cursor, l.o.channels)
	for c := range curs {
		var err error
		if curs[c], err = l.start(ctx, fmt.Sprint("hold-", c)); err != nil {
			return nil, err
		}
	}
	names := make([]string, l.o.channels)
	for c := range names {
		names[c] = fmt.Sprint("hold-", c)
	}
	stopWarm := l.warmUp(ctx, names, curs)
	defer stopWarm()
	before, rssErr := rss(l.o.pids)
	pollCtx, cancel := context.WithCancel(ctx)
	var wrote, failed, fdFailed atomic.Int64
	var firstErr atomic.Pointer[error] // errors of different types: not an atomic.Value
	var wg sync.WaitGroup
	// Opening the polls and waiting until all are held or failed is
	// bounded by -round-deadline.
	openCtx, openDone := l.withRoundLimit(ctx, "hold")
	defer openDone()
	b, err := l.newBurst(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	for i := range n {
		if err := l.pace(openCtx, i, b); err != nil {
			cancel()
			wg.Wait()
			res := map[string]any{"polls": n, "channels": l.o.channels, "opened": i, "held": wrote.Load() - failed.Load(), "errors": failed.Load()}
			return res, fmt.Errorf("hold: %d of %d polls opened, %d failed: %w", i, n, failed.Load(), err)
		}
		wg.Go(func() {
			c := i % l.o.channels
			_, err := l.poll(pollCtx, l.pollClient(i), fmt.Sprint("hold-", c), curs[c], func() { wrote.Add(1) }, fmt.Sprint("hold.", i))
			if err != nil && pollCtx.Err() == nil {
				b.ended.Add(1)
				failed.Add(1)
				if isFDLimit(err) {
					fdFailed.Add(1)
				}
				firstErr.CompareAndSwap(nil, &err)
			}
		})
	}
	err = waitUntil(openCtx, "holding", func() (bool, string) {
		return wrote.Load()+failed.Load() >= int64(n), fmt.Sprintf("%d of %d polls sent, %d failed", wrote.Load(), n, failed.Load())
	})
	opened := time.Since(b.began)
	// Let the server finish taking the last requests in.
	time.Sleep(2 * time.Second)
	after, _ := rss(l.o.pids)
	held := wrote.Load() - failed.Load()
	res := map[string]any{"polls": n, "channels": l.o.channels, "held": held, "errors": failed.Load(), "open_seconds": opened.Seconds()}
	if rssErr == nil && l.o.pids != "" && held > 0 {
		res["rss_before_bytes"], res["rss_after_bytes"] = before, after
		res["rss_bytes_per_held_poll"] = (after - before) / held
	}
	if l.o.keep > 0 { // time to profile the server with the polls held
		progress("keeping %d polls held for %v", held, l.o.keep)
		sleepCtx(ctx, l.o.keep)
	}
	cancel()
	wg.Wait()
	switch {
	case err != nil:
		return res, err
	case fdFailed.Load() > 0:
		return res, fdLimitError(int(wrote.Load()))
	case failed.Load() > 0:
		return res, fmt.Errorf("%d polls failed, the first: %v", failed.Load(), *firstErr.Load())
	}
	progress("held %d polls; RSS per held poll %v bytes", held, res["rss_bytes_per_held_poll"])
	return res, nil
}

// fanout holds n polls on one channel, publishes one message and times
// until each poll has its whole answer, for several rounds.
func (l *loader) fanout(ctx context.Context) (map[string]any, error) {
	n, ch := l.o.n, "fanout"
	if err := l.checkFiles(n); err != nil {
		return nil, err
	}
	cur, err := l.start(ctx, ch)
	if err != nil {
		return nil, err
	}
	var all []time.Duration
	var rounds []map[string]float64
	for r := range l.o.rounds {
		var wrote atomic.Int64
		var published atomic.Int64 // UnixNano of the publish
		times := make([]time.Duration, n)
		errs := make([]error, n)
		nexts := make([]cursor, n)
		// A round the server never finishes (polls neither held nor
		// failed, or never answered) fails at -round-deadline instead of
		// hanging.
		what := "fanout round " + strconv.Itoa(r)
		stopWarm := l.warmUp(ctx, []string{ch}, []cursor{cur})
		roundCtx, cancel := l.withRoundLimit(ctx, what)
		cancel = func(cancelRound context.CancelFunc) context.CancelFunc {
			return func() { cancelRound(); stopWarm() }
		}(cancel)
		var wg sync.WaitGroup
		var failed atomic.Int64
		b, err := l.newBurst(roundCtx)
		opened := 0
		for i := 0; i < n && err == nil; i++ {
			if err = l.pace(roundCtx, i, b); err != nil {
				break
			}
			opened++
			wg.Go(func() {
				res, err := l.poll(roundCtx, l.pollClient(i), ch, cur, func() { wrote.Add(1) }, fmt.Sprintf("fanout.%d.%d", r, i))
				if err != nil {
					b.ended.Add(1)
					failed.Add(1)
				}
				if err != nil && roundCtx.Err() != nil {
					err = fmt.Errorf("not answered: %w", context.Cause(roundCtx))
				}
				times[i] = time.Duration(res.got.UnixNano() - published.Load())
				nexts[i], errs[i] = res.next, err
				if err == nil && len(res.msgs) != 1 {
					errs[i] = fmt.Errorf("poll got %d messages, want 1", len(res.msgs))
				}
			})
		}
		if err == nil {
			err = waitUntil(roundCtx, what, func() (bool, string) {
				return wrote.Load() >= int64(n), fmt.Sprintf("%d of %d polls sent, %d failed", wrote.Load(), n, failed.Load())
			})
		}
		// A round that failed is reported with the rounds before it and
		// its count of failed polls.
		partial := func() map[string]any {
			return map[string]any{"polls": n, "rounds": rounds, "failed_round": r, "opened": opened, "errors": failed.Load()}
		}
		if err != nil {
			cancel()
			wg.Wait()
			return partial(), fmt.Errorf("%s: %d of %d polls opened, %d failed: %w", what, opened, n, failed.Load(), err)
		}
		sleepCtx(roundCtx, time.Second) // the last polls reach the server's wait list
		published.Store(time.Now().UnixNano())
		pubErr := l.publish(roundCtx, ch, fmt.Sprint("round ", r))
		if pubErr != nil {
			cancel()
		}
		wg.Wait()
		cancel()
		if pubErr != nil {
			if roundCtx.Err() != nil {
				pubErr = fmt.Errorf("%s: publish: %w", what, context.Cause(roundCtx))
			}
			return partial(), pubErr
		}
		var first error
		bad := 0
		for _, e := range errs {
			if e != nil {
				bad++
				if first == nil {
					first = e
				}
			}
		}
		switch {
		case first != nil && isFDLimit(first):
			return partial(), fdLimitError(n)
		case first != nil:
			res := partial()
			res["errors"] = bad
			return res, fmt.Errorf("%s: %d of %d polls failed, the first: %v", what, bad, n, first)
		}
		cur = nexts[0]
		p := percentiles(times)
		progress("round %d: %d polls answered, p50 %.1f ms, p99 %.1f ms, max %.1f ms", r, n, p["p50_ms"], p["p99_ms"], p["max_ms"])
		rounds = append(rounds, p)
		all = append(all, times...)
	}
	res := map[string]any{"polls": n, "rounds": rounds, "deliveries": int64(n * len(rounds))}
	for k, v := range percentiles(all) {
		res[k] = v
	}
	return res, nil
}

// throughput: pollers follow cursors over the channels while publishers
// publish as fast as they can; every delivery is checked for loss,
// duplication and order per publisher.
func (l *loader) throughput(ctx context.Context) (map[string]any, error) {
	o := l.o
	if err := l.checkFiles(o.pollers + o.pubs); err != nil {
		return nil, err
	}
	curs := make([]cursor, o.channels)
	for c := range curs {
		var err error
		if curs[c], err = l.start(ctx, fmt.Sprint("tp-", c)); err != nil {
			return nil, err
		}
	}
	// published[p][c]: how many messages publisher p published to channel c.
	published := make([][]atomic.Int64, o.pubs)
	for p := range published {
		published[p] = make([]atomic.Int64, o.channels)
	}
	var deliveries, polls, lost, dup, outOfOrder, gaps, pollErrs atomic.Int64
	drainCtx, cancelDrain := context.WithCancel(ctx)
	defer cancelDrain()
	publishing, pubStopped := context.WithCancel(drainCtx) // done when publishing stops
	defer pubStopped()
	var pollers sync.WaitGroup
	for s := range o.pollers {
		pollers.Go(func() {
			c := s % o.channels
			ch := fmt.Sprint("tp-", c)
			cur := curs[c]
			next := make([]int64, o.pubs) // next index due from each publisher
			complete := func() bool {
				for p := range next {
					if next[p] < published[p][c].Load() {
						return false
					}
				}
				return true
			}
			for {
				// While publishing goes on, a poll is abandoned when it stops,
				// so that a poller that has everything does not wait for a
				// message that will never come. An abandoned poll's answer
				// is asked for again with the same cursor: nothing is lost.
				pollCtx := publishing
				select {
				case <-publishing.Done():
					if complete() {
						return
					}
					pollCtx = drainCtx
				default:
				}
				res, err := l.poll(pollCtx, l.pollClient(s), ch, cur, nil, "")
				if err != nil {
					if drainCtx.Err() != nil {
						break
					}
					if pollCtx.Err() != nil {
						continue // publishing stopped: is it complete?
					}
					pollErrs.Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				polls.Add(1)
				cur = res.next
				if res.gap {
					gaps.Add(1)
				}
				for _, m := range res.msgs {
					ps, is, _ := strings.Cut(m, ":")
					p, _ := strconv.Atoi(ps)
					i, _ := strconv.ParseInt(is, 10, 64)
					deliveries.Add(1)
					switch {
					case p < 0 || p >= o.pubs:
						outOfOrder.Add(1)
					case i == next[p]:
						next[p]++
					case i < next[p]:
						dup.Add(1)
					case res.gap:
						next[p] = i + 1 // messages lost to a signalled gap are counted as gaps
					default:
						outOfOrder.Add(1)
						next[p] = i + 1
					}
				}
			}
			// Stopped by the drain deadline: what never came is lost.
			for p := range next {
				if d := published[p][c].Load() - next[p]; d > 0 {
					lost.Add(d)
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond) // pollers held
	began := time.Now()
	pubCtx, stopPub := context.WithTimeout(ctx, o.duration)
	defer stopPub()
	var pubs sync.WaitGroup
	var pubErrs atomic.Int64
	for p := range o.pubs {
		pubs.Go(func() {
			for k := 0; pubCtx.Err() == nil; k++ {
				c := (k + p) % o.channels
				i := published[p][c].Load()
				if err := l.publish(pubCtx, fmt.Sprint("tp-", c), fmt.Sprintf("%d:%d", p, i)); err != nil {
					if pubCtx.Err() == nil {
						pubErrs.Add(1)
					}
					continue
				}
				published[p][c].Add(1)
			}
		})
	}
	pubs.Wait()
	elapsed := time.Since(began)
	pubStopped()
	var total int64
	for p := range published {
		for c := range published[p] {
			total += published[p][c].Load()
		}
	}
	progress("published %d messages in %v; draining", total, elapsed.Round(time.Millisecond))
	// Pollers stop once they have everything; a deadline turns the rest into losses.
	drained := make(chan struct{})
	go func() { pollers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(60 * time.Second):
		cancelDrain()
		<-drained
	}
	res := map[string]any{
		"pollers": o.pollers, "channels": o.channels, "publishers": o.pubs, "seconds": elapsed.Seconds(),
		"published": total, "publishes_per_second": float64(total) / elapsed.Seconds(),
		"polls_answered": polls.Load(), "deliveries": deliveries.Load(), "deliveries_per_second": float64(deliveries.Load()) / elapsed.Seconds(),
		"lost": lost.Load(), "duplicated": dup.Load(), "out_of_order": outOfOrder.Load(), "gaps": gaps.Load(),
		"poll_errors": pollErrs.Load(), "publish_errors": pubErrs.Load(),
	}
	if lost.Load()+dup.Load()+outOfOrder.Load() > 0 {
		return res, fmt.Errorf("incorrect delivery: %d lost, %d duplicated, %d out of order", lost.Load(), dup.Load(), outOfOrder.Load())
	}
	return res, nil
}

// latency: one poller; a publish every interval; publish→deliver times.
func (l *loader) latency(ctx context.Context) (map[string]any, error) {
	ch := "latency"
	cur, err := l.start(ctx, ch)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var times []time.Duration
	got := make(chan struct{})
	pollCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var pollErr error
	go func() {
		defer close(got)
		c := l.pollClient(0)
		for n := 0; n < l.o.count; {
			res, err := l.poll(pollCtx, c, ch, cur, nil, "")
			if err != nil {
				if pollCtx.Err() == nil {
					pollErr = err
				}
				return
			}
			now := res.got.UnixNano()
			cur = res.next
			for _, m := range res.msgs {
				sent, _ := strconv.ParseInt(m, 10, 64)
				mu.Lock()
				times = append(times, time.Duration(now-sent))
				mu.Unlock()
				n++
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // the poll is held
	tick := time.NewTicker(l.o.every)
	defer tick.Stop()
	for range l.o.count {
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-tick.C:
		}
		if err := l.publish(ctx, ch, strconv.FormatInt(time.Now().UnixNano(), 10)); err != nil {
			return nil, err
		}
	}
	select {
	case <-got:
	case <-time.After(30 * time.Second):
		cancel()
		<-got
	}
	if pollErr != nil {
		return nil, pollErr
	}
	mu.Lock()
	defer mu.Unlock()
	res := map[string]any{"messages": l.o.count, "delivered": len(times), "deliveries": int64(len(times)), "every_ms": float64(l.o.every.Microseconds()) / 1000}
	for k, v := range percentiles(times) {
		res[k] = v
	}
	if len(times) != l.o.count {
		return res, fmt.Errorf("delivered %d of %d messages", len(times), l.o.count)
	}
	return res, nil
}
