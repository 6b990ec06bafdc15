package longpoll

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-longpoll/longpoll/internal/connwatch"
	"github.com/caddy-longpoll/longpoll/poller"
	"github.com/caddy-longpoll/longpoll/store"
)

// BenchmarkParkedFanout is the wake and write path of park mode: N polls
// parked on one channel over real loopback connections, one publish, every
// poll answered and its connection handed back to the server, which reads
// the client's next poll and parks it again. One op is one publish; the
// figures per woken poll are ns/poll and allocs/poll (the clients are
// minimal: a fixed request, the answer read into a fixed buffer, no
// allocation; each sends its next poll only once the timer is stopped, so
// the re-parking is not measured). Plain net/http serves the polls, not Caddy: this measures
// the plugin's path, not Caddy's routing.
//
//	go test -run XXX -bench ParkedFanout -benchtime 20x .
func BenchmarkParkedFanout(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) { benchParkedFanout(b, n) })
	}
}

func benchParkedFanout(b *testing.B, n int) {
	p := poller.New(0)
	w, err := connwatch.New()
	if err != nil {
		b.Fatal(err)
	}
	st := store.NewMemory(store.MemoryConfig{Buffer: 100, TTL: time.Hour})
	sh := &shared{store: st, poller: p, metrics: newMetrics(p, st), answers: newAnswerCache(),
		parked: newParkedPolls(), watch: w, logger: zap.NewNop()}
	sh.release.Close() // no forced GC after bursts of parks
	defer sh.Destruct()
	ans := answerer{format: FormatJSON, answers: sh.answers, metrics: sh.metrics}
	pk := parker{shared: sh, logger: zap.NewNop(), respond: func(w http.ResponseWriter, a *await, v verdict) error {
		return ans.respond(w, a.subs[0].channel, a.subs[0].cursor, v)
	}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := newAwait(p, st, "c", r.URL.Query().Get("since"))
		if handled, _ := pk.servePark(w, r, a, time.Hour); !handled {
			b.Error("a poll was not parked")
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	info, _ := st.Info(context.Background(), "c")
	var mu sync.Mutex
	answered := make(chan error, n)
	next := make(chan struct{}) // closed and replaced: send the next poll
	clients := make([]*benchClient, n)
	for i := range clients {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		clients[i] = &benchClient{conn: conn, cursor: info.Cursor}
		go clients[i].run(answered, func() <-chan struct{} { mu.Lock(); defer mu.Unlock(); return next })
	}
	again := func() {
		mu.Lock()
		close(next)
		next = make(chan struct{})
		mu.Unlock()
	}
	waitParked := func() {
		for p.Held() < n {
			runtime.Gosched()
		}
	}
	msg := store.Message{Type: "text/plain", Data: []byte("hello")}
	waitParked()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, _, err := st.Append(context.Background(), "c", msg, ""); err != nil {
			b.Fatal(err)
		}
		p.Wake("c")
		for range n {
			if err := <-answered; err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		again()
		waitParked() // the next polls: not the wake path
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/poll")
	for _, c := range clients {
		c.conn.Close()
	}
}

// benchClient polls on one connection: it sends a poll from its cursor,
// reads the answer, takes the cursor from its ETag and reports, again and
// again until its connection closes.
type benchClient struct {
	conn   net.Conn
	cursor string
	buf    [4096]byte
}

func (c *benchClient) run(answered chan<- error, next func() <-chan struct{}) {
	req := make([]byte, 0, 128)
	for {
		req = append(req[:0], "GET /poll/c?since="...)
		req = append(req, c.cursor...)
		req = append(req, " HTTP/1.1\r\nHost: b\r\n\r\n"...)
		if _, err := c.conn.Write(req); err != nil {
			return
		}
		n, err := c.readAnswer()
		if err != nil {
			if err != io.EOF && !isClosed(err) {
				answered <- err
			}
			return
		}
		head := c.buf[:n]
		i := bytes.Index(head, []byte("\r\nEtag: \""))
		if !bytes.HasPrefix(head, []byte("HTTP/1.1 200 ")) || i < 0 || bytes.Contains(head, []byte("Connection: close")) {
			answered <- fmt.Errorf("answer: %q", head)
			return
		}
		rest := head[i+len("\r\nEtag: \""):]
		c.cursor = string(rest[:bytes.IndexByte(rest, '"')])
		wait := next() // before reporting: the timer stops after
		answered <- nil
		<-wait
	}
}

// readAnswer reads one answer (headers and Content-Length bytes of body)
// into c.buf and returns its length.
func (c *benchClient) readAnswer() (int, error) {
	n := 0
	for {
		m, err := c.conn.Read(c.buf[n:])
		n += m
		if end := bytes.Index(c.buf[:n], []byte("\r\n\r\n")); end >= 0 {
			cl := 0
			if i := bytes.Index(c.buf[:end], []byte("\r\nContent-Length: ")); i >= 0 {
				v := c.buf[i+len("\r\nContent-Length: "):]
				cl, _ = strconv.Atoi(string(v[:bytes.IndexByte(v, '\r')]))
			}
			if n >= end+4+cl {
				return n, nil
			}
		}
		if err != nil {
			return n, err
		}
		if n == len(c.buf) {
			return n, fmt.Errorf("answer over %d bytes", n)
		}
	}
}

func isClosed(err error) bool { return errors.Is(err, net.ErrClosed) }
