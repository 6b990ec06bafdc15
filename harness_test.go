package longpoll_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"go.uber.org/goleak"

	longpoll "github.com/caddy-longpoll/longpoll"
)

// adminPort is the admin endpoint of the in-process Caddy these tests run.
const adminPort = 2999

var emptyConfig = fmt.Sprintf("{\n\tadmin localhost:%d\n\tpersist_config off\n}\n", adminPort)

// server is one loaded test config: a poll address and a publish address.
type server struct {
	t      *testing.T
	tc     *caddytest.Tester
	poll   string // base URL of the site with the longpoll routes
	pub    string // base URL of the publish site
	client *http.Client
}

// freePorts returns n distinct free ports (freePort twice in a row may
// return the same one).
func freePorts(t testing.TB, n int) []int {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// start loads a config into the in-process Caddy. global goes into the
// global options block; pollSite and pubSite are the bodies of a site on a
// fresh port each.
func start(t *testing.T, global, pollSite, pubSite string) *server {
	t.Helper()
	s := &server{t: t, tc: caddytest.NewTester(t)}
	// An empty config first: the previous test's store is closed, so this
	// test starts with an empty one.
	s.tc.InitServer(emptyConfig, "caddyfile")
	ports := freePorts(t, 2)
	pp, bp := ports[0], ports[1]
	s.poll = fmt.Sprintf("http://127.0.0.1:%d", pp)
	s.pub = fmt.Sprintf("http://127.0.0.1:%d", bp)
	s.load(global, pollSite, pubSite, pp, bp)
	s.client = newClient(t)
	return s
}

// newClient is an HTTP client for many concurrent polls; its idle
// connections are closed when the test ends.
func newClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 10000, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (s *server) config(global, pollSite, pubSite string, pp, bp int) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	auto_https off
	persist_config off
	%s
}
http://127.0.0.1:%d {
	%s
}
http://127.0.0.1:%d {
	%s
}
`, adminPort, global, pp, pollSite, bp, pubSite)
}

func (s *server) load(global, pollSite, pubSite string, pp, bp int) {
	s.t.Helper()
	s.tc.InitServer(s.config(global, pollSite, pubSite, pp, bp), "caddyfile")
	if s.t.Failed() {
		s.t.FailNow()
	}
}

// reload loads a new config on the same ports.
func (s *server) reload(global, pollSite, pubSite string) {
	s.t.Helper()
	var pp, bp int
	fmt.Sscanf(s.poll, "http://127.0.0.1:%d", &pp)
	fmt.Sscanf(s.pub, "http://127.0.0.1:%d", &bp)
	s.load(global, pollSite, pubSite, pp, bp)
}

type resp struct {
	status int
	header http.Header
	body   string
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("answer %d is not JSON: %v: %q", r.status, err, r.body)
	}
	return v
}

func (s *server) do(ctx context.Context, method, url string, body string, hdr ...string) (resp, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return resp{}, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := s.client.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, string(b)}, err
}

// must does a request that must get an answer.
func (s *server) must(method, url, body string, hdr ...string) resp {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := s.do(ctx, method, url, body, hdr...)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

// publish posts a message and returns the answer.
func (s *server) publish(channel, ctype, body string, hdr ...string) map[string]any {
	s.t.Helper()
	r := s.must("POST", s.pub+"/publish/"+channel, body, append([]string{"Content-Type", ctype}, hdr...)...)
	if r.status != 200 {
		s.t.Fatalf("publish to %s: %d %s", channel, r.status, r.body)
	}
	return r.json(s.t)
}

// info returns the channel info of the publish endpoint.
func (s *server) info(channel string) map[string]any {
	s.t.Helper()
	r := s.must("GET", s.pub+"/publish/"+channel, "")
	if r.status != 200 {
		s.t.Fatalf("info of %s: %d %s", channel, r.status, r.body)
	}
	return r.json(s.t)
}

// waitHeld waits until n polls are held on channel.
func (s *server) waitHeld(channel string, n int) {
	s.t.Helper()
	waitFor(s.t, fmt.Sprintf("%d polls held on %s", n, channel), func() bool {
		return s.info(channel)["subscribers"] == float64(n)
	})
}

// waitFor polls cond until it holds; the deadline only guards against a hang.
var waitFor = longpoll.WaitFor

// pollAsync starts a poll and returns a channel with its answer.
func (s *server) pollAsync(ctx context.Context, url string, hdr ...string) <-chan resp {
	out := make(chan resp, 1)
	go func() {
		r, err := s.do(ctx, "GET", url, "", hdr...)
		if err != nil {
			r = resp{status: -1, body: err.Error()}
		}
		out <- r
	}()
	return out
}

// assertMetrics checks that Caddy's metrics have each of the lines want.
func (s *server) assertMetrics(want ...string) {
	s.t.Helper()
	m := s.must("GET", fmt.Sprintf("http://localhost:%d/metrics", adminPort), "").body
	for _, w := range want {
		if !strings.Contains(m, w+"\n") {
			s.t.Errorf("metrics lack %q:\n%s", w, grepLongpoll(m))
		}
	}
}

// checkLeaks registers a goroutine-leak check for the end of the test. The
// goroutines running now (Caddy's own, and the listeners of the test's
// config) are the baseline; at the end the test's config is replaced by an
// empty one and keep-alive connections are closed, so that no goroutine the
// test started (a held poll, a handler, a timer) may still run.
func checkLeaks(t *testing.T, s *server) {
	opts := leakOptions()
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		tc := caddytest.NewTester(t)
		tc.InitServer(emptyConfig, "caddyfile")
		s.client.CloseIdleConnections()
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		tc.Client.CloseIdleConnections()
		goleak.VerifyNone(t, opts...)
	})
}

// leakOptions are goleak's options for a check at the end of a test: the
// goroutines running now are the baseline, and two of the in-process
// Caddy's may start meanwhile.
func leakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreCurrent(),
		// The admin endpoint is restarted by every config load.
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2.replaceLocalAdminServer.func2"),
		// Caddy's storage clean-up lock, refreshed every 5 s until it
		// sees the lock is gone (it made one test flaky).
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh")}
}
