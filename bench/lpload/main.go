// Command lpload drives a long-poll server over real sockets and reports
// what users choose a long-poll server by: memory per held poll, fan-out
// time, publish throughput with a correctness count, and latency.
//
//	lpload hold       -n 10000 -channels 10 -pid 1234
//	lpload fanout     -n 10000 -rounds 5
//	lpload throughput -s 100 -channels 10 -p 4 -t 10s
//	lpload latency    -count 1000 -every 10ms
//	lpload grip-origin -listen 127.0.0.1:9190   # the GRIP origin behind Pushpin
//	lpload fanout -profile pushpin -origin http://127.0.0.1:9190/stats -window 50
//	lpload hold -poll 'https://127.0.0.1:8443/poll/{ch}' -insecure -proto h2 -n 10000
//
// Over https (-insecure: the certificate is not checked), each poller has
// a connection of its own, as a browser per user has, over HTTP/2 or
// HTTP/1.1 (-proto); over http the pollers share the clients' connections.
//
// No scenario waits forever: -round-deadline bounds opening a hold's polls
// and each fan-out round (opened, held, answered), -deadline the whole run;
// what is not done by then is a failure, reported with its figures so far.
//
// Progress goes to stderr; each result is one JSON line on stdout. The
// server is named by -profile (how to poll, resume and publish) and the
// -poll and -pub URL templates, where {ch} is the channel.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type options struct {
	profile  string
	pollURL  string
	pubURL   string
	pids     string
	sources  string
	n        int
	channels int
	rounds   int
	pollers  int
	pubs     int
	duration time.Duration
	count    int
	every    time.Duration
	keep     time.Duration
	rate     int
	origin   string
	window   int
	// deadline bounds the whole scenario; roundDeadline a hold's opening
	// or one fan-out round (plus n/rate under -rate).
	deadline      time.Duration
	roundDeadline time.Duration
	warm          time.Duration
	insecure      bool   // https: do not check the server's certificate
	proto         string // https polls: h2 or h1 (HTTP/1.1)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	scenario := os.Args[1]
	if scenario == "grip-origin" {
		if err := runOrigin(os.Args[2:]); err != nil {
			fail(err)
		}
		return
	}
	fs := flag.NewFlagSet(scenario, flag.ExitOnError)
	var o options
	fs.StringVar(&o.profile, "profile", "longpoll", "server profile: longpoll (this plugin), nchan, pushpin (through lpload grip-origin), or bare (bench/barecaddy, the floor: hold and fanout only)")
	fs.StringVar(&o.pollURL, "poll", "http://127.0.0.1:8080/poll/{ch}", "poll URL template; {ch} is the channel")
	fs.StringVar(&o.pubURL, "pub", "http://127.0.0.1:8081/publish/{ch}", "publish URL template; {ch} is the channel")
	fs.StringVar(&o.pids, "pid", "", "server process IDs, comma-separated, for RSS (hold)")
	fs.StringVar(&o.sources, "sources", "127.0.0.1", "client source addresses, comma-separated, used in turn (more ports)")
	fs.IntVar(&o.n, "n", 1000, "polls to hold (hold, fanout)")
	fs.IntVar(&o.channels, "channels", 1, "channels (hold, throughput)")
	fs.IntVar(&o.rounds, "rounds", 5, "rounds (fanout)")
	fs.IntVar(&o.pollers, "s", 100, "pollers (throughput)")
	fs.IntVar(&o.pubs, "p", 4, "publishers (throughput)")
	fs.DurationVar(&o.duration, "t", 10*time.Second, "how long to publish (throughput)")
	fs.IntVar(&o.count, "count", 1000, "messages (latency)")
	fs.DurationVar(&o.every, "every", 10*time.Millisecond, "publish interval (latency)")
	fs.IntVar(&o.rate, "rate", 0, "open at most this many polls per second (hold, fanout); 0: all at once")
	fs.StringVar(&o.origin, "origin", "", "the GRIP origin's stats URL (lpload grip-origin's /stats): reports its poll requests per delivered message (per held poll for hold)")
	fs.IntVar(&o.window, "window", 0, "with -origin: open a poll only while fewer than this many opened polls have not yet reached the origin (hold, fanout); 0: no bound")
	fs.DurationVar(&o.deadline, "deadline", 15*time.Minute, "give up (a failure) when the scenario has not ended after this long; 0: no bound")
	fs.DurationVar(&o.roundDeadline, "round-deadline", 2*time.Minute, "give up (a failure) when a hold's polls are not all held, or a fan-out round's not all answered, this long after the first was opened (plus n/rate under -rate); 0: no bound")
	fs.DurationVar(&o.warm, "warm", 0, "hold one poll on each channel this long before a hold's or fan-out round's polls are opened, and until they end (Pushpin re-asks the origin for every poll held on a channel in the second after its first hold there: docs/grip.md); 0: none")
	fs.DurationVar(&o.keep, "keep", 0, "keep the polls held this long after measuring, to profile the server (hold)")
	fs.BoolVar(&o.insecure, "insecure", false, "do not check the server's TLS certificate (self-signed or internal); needed for an https -poll URL")
	fs.StringVar(&o.proto, "proto", "h2", "with an https -poll URL: h2 (HTTP/2, ALPN h2) or h1 (HTTP/1.1 over TLS); each poller has a connection of its own")
	fs.Parse(os.Args[2:])

	prof, ok := profiles[o.profile]
	if !ok {
		fail(fmt.Errorf("unknown profile %q", o.profile))
	}
	if strings.HasPrefix(o.pollURL, "https://") && !o.insecure {
		fail(errors.New("an https -poll URL needs -insecure: lpload does not check certificates (self-signed, tls internal)"))
	}
	if o.proto != "h2" && o.proto != "h1" {
		fail(fmt.Errorf("-proto %q: h2 or h1", o.proto))
	}
	if o.window > 0 && o.origin == "" {
		fail(errors.New("-window needs -origin: it counts the polls that have reached the origin"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l := newLoader(o, prof)
	before, err := l.originPolls(ctx)
	if err != nil {
		fail(err)
	}
	var res map[string]any
	switch scenario {
	case "hold", "fanout", "throughput", "latency":
		res, err = l.run(ctx, scenario)
	default:
		usage()
	}
	if res != nil && o.origin != "" {
		err = errors.Join(err, l.addOriginCost(ctx, res, before))
	}
	if res != nil {
		res["scenario"], res["profile"] = scenario, o.profile
		line, _ := json.Marshal(res)
		fmt.Println(string(line))
	}
	if err != nil {
		fail(err)
	}
}

// errDeadline is the cause of a scenario's context ending at -deadline.
var errDeadline = errors.New("gave up at -deadline")

// run runs a scenario within -deadline: past it the scenario's context
// ends, every wait and request of the scenario with it, and the error says
// so (with what the scenario had measured by then, if anything).
func (l *loader) run(ctx context.Context, scenario string) (map[string]any, error) {
	if l.o.deadline > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, l.o.deadline, fmt.Errorf("%w (%v)", errDeadline, l.o.deadline))
		defer cancel()
	}
	var res map[string]any
	var err error
	switch scenario {
	case "hold":
		res, err = l.hold(ctx)
	case "fanout":
		res, err = l.fanout(ctx)
	case "throughput":
		res, err = l.throughput(ctx)
	case "latency":
		res, err = l.latency(ctx)
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
		err = errors.Join(cause, err) // the deadline, whatever it interrupted
	}
	return res, err
}

// roundLimit is how long a hold's opening or a fan-out round may take:
// -round-deadline, plus the time -rate takes to open the polls; 0: none.
func (l *loader) roundLimit() time.Duration {
	if l.o.roundDeadline <= 0 {
		return 0
	}
	d := l.o.roundDeadline
	if l.o.rate > 0 {
		d += time.Duration(l.o.n) * time.Second / time.Duration(l.o.rate)
	}
	return d
}

// withRoundLimit is ctx bounded by roundLimit; past it, context.Cause names
// what gave up.
func (l *loader) withRoundLimit(ctx context.Context, what string) (context.Context, context.CancelFunc) {
	d := l.roundLimit()
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, d, fmt.Errorf("%s: gave up at -round-deadline (%v)", what, d))
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: lpload hold|fanout|throughput|latency|grip-origin [flags]; lpload SCENARIO -h for the flags")
	os.Exit(2)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "lpload:", err)
	os.Exit(1)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "lpload: "+format+"\n", args...)
}

// loader holds the clients and the profile.
type loader struct {
	o       options
	prof    profile
	dialers []*net.Dialer  // one per source address
	clients []*http.Client // one per source address (http polls)
	next    atomic.Uint64
	pub     *http.Client
	tls     bool // https polls: each poller has its own client (own)
	mu      sync.Mutex
	own     map[int]*http.Client
}

func newLoader(o options, prof profile) *loader {
	l := &loader{o: o, prof: prof, tls: strings.HasPrefix(o.pollURL, "https://"), own: map[int]*http.Client{}}
	for _, src := range strings.Split(o.sources, ",") {
		d := &net.Dialer{Timeout: 10 * time.Second}
		if ip := net.ParseIP(strings.TrimSpace(src)); ip != nil && !ip.Equal(net.IPv4(127, 0, 0, 1)) {
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
		l.dialers = append(l.dialers, d)
		l.clients = append(l.clients, &http.Client{Transport: &http.Transport{
			DialContext: d.DialContext, MaxIdleConnsPerHost: 100000, DisableCompression: true,
		}})
	}
	pub := &http.Transport{MaxIdleConnsPerHost: 1000, DisableCompression: true}
	if o.insecure {
		pub.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	l.pub = &http.Client{Transport: pub}
	return l
}

func (l *loader) client() *http.Client {
	return l.clients[l.next.Add(1)%uint64(len(l.clients))]
}

// pollClient is the client poller i polls with. Over http, the shared
// clients in turn (client). Over https, poller i's own client, made on
// first use and kept across its polls and fan-out rounds: one connection
// per poller, HTTP/2 or HTTP/1.1 as -proto says, the way each user's
// browser has its own.
func (l *loader) pollClient(i int) *http.Client {
	if !l.tls {
		return l.client()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.own[i]
	if !ok {
		var p http.Protocols
		if l.o.proto == "h2" {
			p.SetHTTP2(true) // ALPN h2 only: a server without HTTP/2 fails the poll
		} else {
			p.SetHTTP1(true)
		}
		c = &http.Client{Transport: &http.Transport{
			DialContext:     l.dialers[l.next.Add(1)%uint64(len(l.dialers))].DialContext,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			Protocols:       &p, MaxIdleConnsPerHost: 1, DisableCompression: true,
		}}
		l.own[i] = c
	}
	return c
}

// burst is a batch of polls opened together (hold, a fan-out round), paced
// by -rate and -window.
type burst struct {
	began  time.Time
	origin int64        // the distinct polls the origin had seen when the burst began
	ended  atomic.Int64 // polls of the burst that failed, some before reaching the origin
	seen   int64        // the burst's polls the origin had last been seen to take in
	moved  time.Time    // when seen last grew
}

// windowStall is how long -window waits for one more poll to reach the
// origin before it gives up: a proxy that neither forwards nor fails the
// polls it has would stall the burst for good.
const windowStall = 30 * time.Second

func (l *loader) newBurst(ctx context.Context) (*burst, error) {
	n, err := l.originArrived(ctx)
	return &burst{began: time.Now(), origin: n, moved: time.Now()}, err
}

// pace waits until poll i of burst b may be opened: under -rate, at its
// time; under -window, once fewer than -window of the polls before it are
// still on their way to the origin (neither taken in by it nor failed).
func (l *loader) pace(ctx context.Context, i int, b *burst) error {
	if l.o.rate > 0 {
		at := b.began.Add(time.Duration(i) * time.Second / time.Duration(l.o.rate))
		if !sleepCtx(ctx, time.Until(at)) {
			return context.Cause(ctx)
		}
	}
	for l.o.window > 0 && int64(i)-b.seen >= int64(l.o.window) {
		n, err := l.originArrived(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return err
		}
		if seen := n - b.origin + b.ended.Load(); seen > b.seen {
			b.seen, b.moved = seen, time.Now()
			continue
		}
		if time.Since(b.moved) > windowStall {
			return fmt.Errorf("%d polls opened, %d of them neither at the origin nor failed, none arriving there for %v", i, int64(i)-b.seen, windowStall)
		}
		if !sleepCtx(ctx, 2*time.Millisecond) {
			return context.Cause(ctx)
		}
	}
	return nil
}

// warmUp holds one poll on each of chans for -warm before a burst on them
// and keeps it until stop is called (its answer, if any, is ignored).
func (l *loader) warmUp(ctx context.Context, chans []string, curs []cursor) (stop func()) {
	if l.o.warm <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, ch := range chans {
		wg.Go(func() { l.poll(ctx, l.pollClient(-1-i), ch, curs[i], nil, "warm."+ch) })
	}
	sleepCtx(ctx, l.o.warm)
	return func() { cancel(); wg.Wait() }
}

// sleepCtx sleeps for d unless ctx ends first; it reports whether ctx is
// still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	return ctx.Err() == nil
}

// originPolls asks the GRIP origin (-origin) how many poll requests it has
// served; 0 without -origin.
func (l *loader) originPolls(ctx context.Context) (int64, error) {
	st, err := l.originStats(ctx)
	return st.PollRequests, err
}

// originArrived is how many distinct polls have reached the GRIP origin
// (-origin): a poll the proxy asks for again (Pushpin re-asks for the
// polls held on a channel a second after its first hold there,
// docs/grip.md) counts once. It is what -window paces on.
func (l *loader) originArrived(ctx context.Context) (int64, error) {
	st, err := l.originStats(ctx)
	return st.DistinctPolls, err
}

// originStats asks the GRIP origin (-origin) what it has served; zero
// without -origin.
func (l *loader) originStats(ctx context.Context) (originStats, error) {
	if l.o.origin == "" {
		return originStats{}, nil
	}
	req, err := http.NewRequestWithContext(ctx, "GET", l.o.origin, nil)
	if err != nil {
		return originStats{}, err
	}
	res, err := l.pub.Do(req)
	if err != nil {
		return originStats{}, fmt.Errorf("origin stats: %w", err)
	}
	defer res.Body.Close()
	var st struct {
		PollRequests  *int64 `json:"poll_requests"`
		DistinctPolls *int64 `json:"distinct_polls"`
	}
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil || st.PollRequests == nil || st.DistinctPolls == nil {
		return originStats{}, fmt.Errorf("origin stats at %s: %s, no poll_requests and distinct_polls (%v)", l.o.origin, res.Status, err)
	}
	return originStats{PollRequests: *st.PollRequests, DistinctPolls: *st.DistinctPolls}, nil
}

// addOriginCost adds to a scenario's result the poll requests the origin
// served during it (origin_requests, from before) and that per delivered
// message (per held poll for hold): what a GRIP proxy costs the app.
func (l *loader) addOriginCost(ctx context.Context, res map[string]any, before int64) error {
	// Asked even when the scenario's context has ended, but not forever.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	after, err := l.originPolls(ctx)
	if err != nil {
		return err
	}
	res["origin_requests"] = after - before
	per, key := res["deliveries"], "origin_requests_per_delivery"
	if held, ok := res["held"]; ok {
		per, key = held, "origin_requests_per_held_poll"
	}
	if d, ok := per.(int64); ok && d > 0 {
		res[key] = float64(after-before) / float64(d)
	}
	return nil
}

func (l *loader) url(tpl, ch string) string { return strings.ReplaceAll(tpl, "{ch}", ch) }

// pollResult is one poll's answer.
type pollResult struct {
	msgs []string
	next cursor
	gap  bool
	got  time.Time // when the whole answer had arrived, before parsing it
}

// pollTags names hold and fan-out polls (the origin's pollHeader): unique
// to this process and, with the poll's place, to the poll.
var pollTags = fmt.Sprintf("%d.%d", os.Getpid(), time.Now().UnixNano())

// poll does one poll and returns the messages and the cursor to send next;
// a non-empty tag names it to the GRIP origin (pollHeader).
func (l *loader) poll(ctx context.Context, c *http.Client, ch string, cur cursor, wrote func(), tag string) (pollResult, error) {
	req, err := l.prof.pollRequest(ctx, l.url(l.o.pollURL, ch), cur)
	if err != nil {
		return pollResult{next: cur}, err
	}
	if tag != "" && l.o.origin != "" {
		req.Header.Set(pollHeader, pollTags+"."+tag)
	}
	if wrote != nil {
		req = req.WithContext(withWrote(req.Context(), wrote))
	}
	res, err := c.Do(req)
	if err != nil {
		return pollResult{next: cur}, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	got := time.Now()
	if err != nil {
		return pollResult{next: cur}, err
	}
	msgs, next, gap, err := l.prof.parse(res, body, cur)
	return pollResult{msgs, next, gap, got}, err
}

func (l *loader) publish(ctx context.Context, ch, data string) error {
	req, err := http.NewRequestWithContext(ctx, "POST", l.url(l.o.pubURL, ch), strings.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/plain")
	res, err := l.pub.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode >= 300 {
		return fmt.Errorf("publish to %s: %s", ch, res.Status)
	}
	return nil
}

// start returns the cursor a poll uses to get everything published from now.
func (l *loader) start(ctx context.Context, ch string) (cursor, error) {
	return l.prof.start(ctx, l, ch)
}

// rss sums the resident memory of the server processes, in bytes.
func rss(pids string) (int64, error) {
	var total int64
	for _, p := range strings.Split(pids, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		raw, err := os.ReadFile("/proc/" + p + "/status")
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				total += kb * 1024
			}
		}
	}
	return total, nil
}

func nofileLimit() uint64 {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return 0
	}
	return lim.Cur
}

// isFDLimit reports whether err is running out of open files.
func isFDLimit(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || strings.Contains(fmt.Sprint(err), "too many open files")
}

func fdLimitError(n int) error {
	return fmt.Errorf("ran out of open files after about %d connections: this process may open %d files (ulimit -n; the hard limit here is %s). "+
		"Each held poll needs one file in this process and one in the server; see the README's Performance section for tuning",
		n, nofileLimit(), hardLimit())
}

func hardLimit() string {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return "unknown"
	}
	return strconv.FormatUint(lim.Max, 10)
}

// percentiles of ds in milliseconds.
func percentiles(ds []time.Duration) map[string]float64 {
	if len(ds) == 0 {
		return map[string]float64{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(q float64) float64 {
		i := int(q * float64(len(ds)-1))
		return float64(ds[i].Microseconds()) / 1000
	}
	return map[string]float64{"p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1)}
}
