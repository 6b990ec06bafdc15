package longpoll_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/caddy-longpoll/longpoll/internal/redistest"
)

// Bad Redis store options are refused with the reason (the adapted JSON of
// the good ones is testdata/global_redis_store_*.caddyfiletest).
func TestRedisCaddyfileAdapts(t *testing.T) {
	for _, tc := range []struct{ src, says string }{
		{"store redis {\n\t\t\taddress a:1\n\t\t\turl redis://b\n\t\t}", "set address or url, not both"},
		{"store redis {\n\t\t\tprefix {x}:\n\t\t}", "may not contain braces"},
		{"store redis {\n\t\t\tport 6379\n\t\t}", `unrecognized redis store option "port"`},
		{"store redis {\n\t\t\tdb -1\n\t\t}", "db must be a whole number of at least 0"},
		{"store redis {\n\t\t\ttls {\n\t\t\t\tverify no\n\t\t\t}\n\t\t}", `unrecognized redis tls option "verify"`},
	} {
		src := "{\n\tlongpoll {\n\t\t" + tc.src + "\n\t}\n}\n:80\n"
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.says)
		}
	}

	// Refused at load, with the reason and never the URL's password.
	tc := caddytest.NewTester(t)
	tc.InitServer(emptyConfig, "caddyfile")
	caddytest.AssertLoadError(t, fmt.Sprintf(`{"admin": {"listen": "localhost:%d"}, "apps": {"longpoll": {"store": {"type": "redis", "url": "http://u:s3cret@h"}}}}`, adminPort), "json", "bad url")
	caddytest.AssertLoadError(t, fmt.Sprintf(`{"admin": {"listen": "localhost:%d"}, "apps": {"longpoll": {"store": {"type": "redis", "tls": {"ca": "/nonexistent.pem"}}}}}`, adminPort), "json", "reading tls ca")
}

// reportErrors is a site's handle_errors that shows the error it got.
const reportErrors = `handle_errors {
		respond "handled {err.status_code}: {err.message}"
	}`

// The HTTP contract holds with the Redis store in an in-process Caddy, and
// the password comes from an {env.*} placeholder.
func TestRedisStoreThroughCaddy(t *testing.T) {
	srv := redistest.Start(t)
	if err := srv.Client().ConfigSet(context.Background(), "requirepass", "pw-from-env").Err(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LONGPOLL_TEST_REDIS_PASSWORD", "pw-from-env")
	s := start(t, fmt.Sprintf("longpoll {\n\t\tstore redis {\n\t\t\taddress %s\n\t\t\tpassword {env.LONGPOLL_TEST_REDIS_PASSWORD}\n\t\t\tbuffer 3\n\t\t}\n\t}", srv.Addr()),
		"longpoll /poll/*\n\t"+reportErrors, "longpoll_publish /publish/*\n\t"+reportErrors)
	checkLeaks(t, s)

	cursor := s.info("c")["cursor"].(string)
	got := s.pollAsync(context.Background(), s.poll+"/poll/c?since="+cursor)
	s.waitHeld("c", 1)
	s.publish("c", "application/json", `{"n":1}`)
	r := <-got
	if r.status != 200 {
		t.Fatalf("held poll: %d %s", r.status, r.body)
	}
	ans := r.json(t)
	msgs := ans["messages"].([]any)
	if len(msgs) != 1 || msgs[0].(map[string]any)["data"].(map[string]any)["n"] != 1.0 {
		t.Fatalf("held poll got %s", r.body)
	}
	// Buffer 3: a cursor from before five more messages is a gap.
	for i := range 5 {
		s.publish("c", "text/plain", fmt.Sprint(i))
	}
	r = s.must("GET", s.poll+"/poll/c?since="+ans["cursor"].(string), "")
	if r.status != 200 || r.header.Get("Longpoll-Gap") != "true" || len(r.json(t)["messages"].([]any)) != 3 {
		t.Fatalf("old cursor after eviction: %d %v %s", r.status, r.header, r.body)
	}
	// Idempotent publish.
	a := s.publish("c", "text/plain", "once", "Idempotency-Key", "k")
	b := s.publish("c", "text/plain", "once", "Idempotency-Key", "k")
	if a["id"] != b["id"] {
		t.Fatalf("idempotent publish stored twice: %v %v", a, b)
	}
	// Delete answers the held poll 410.
	got = s.pollAsync(context.Background(), s.poll+"/poll/c?since="+b["id"].(string))
	s.waitHeld("c", 1)
	if r := s.must("DELETE", s.pub+"/publish/c", ""); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := <-got; r.status != 410 {
		t.Fatalf("held poll on deleted channel: %d %s", r.status, r.body)
	}

	// Redis gone: publishing answers 503 at once, a held poll stays held.
	// The poll carries the current cursor, which the instance knows from
	// its own publish: it is held without reading Redis (had it still been
	// reading when Redis went, it would rightly get a 503).
	last := s.publish("d", "text/plain", "last")["id"].(string)
	held := s.pollAsync(context.Background(), s.poll+"/poll/d?since="+last)
	s.waitHeld("d", 1)
	srv.Kill()
	// Store failures reach the site's handle_errors (reportErrors).
	r = s.must("POST", s.pub+"/publish/d", "x")
	if r.status != 503 || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, `handled 503: publishing to "d": store unavailable`) {
		t.Fatalf("publish with Redis down: %d %v %s", r.status, r.header, r.body)
	}
	r = s.must("GET", s.poll+"/poll/d?since="+cursor, "")
	if r.status != 503 || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, `handled 503: polling "d": store unavailable`) {
		t.Fatalf("poll with Redis down: %d %v %s", r.status, r.header, r.body)
	}
	select {
	case r := <-held:
		t.Fatalf("held poll answered when Redis went away: %d %s", r.status, r.body)
	default:
	}
	// Held polls are answered when the config is replaced (checkLeaks).
}

// caddyProc is a Caddy process of the test, with a poll and a publish site.
type caddyProc struct {
	*server
	cmd    *exec.Cmd
	exited chan struct{}
	log    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// procConfig is what differs between the Caddy processes of the tests:
// how many messages the Redis store keeps per channel, and the body of the
// site on the poll port (the publish port always has longpoll_publish
// /publish/*).
type procConfig struct {
	buffer   int
	pollSite string
}

// pollProc has native polls only.
var pollProc = procConfig{buffer: 1000, pollSite: "longpoll /poll/* {\n\t\ttimeout 10s\n\t}"}

// startCaddyProc runs the built Caddy with a Redis store at addr and
// pollProc's sites.
func startCaddyProc(t *testing.T, bin, addr string, pp, bp int) *caddyProc {
	return startCaddyProcWith(t, bin, addr, pollProc, pp, bp)
}

// startCaddyProcWith runs the built Caddy with a Redis store at addr and
// cfg's sites.
func startCaddyProcWith(t *testing.T, bin, addr string, cfg procConfig, pp, bp int) *caddyProc {
	file := filepath.Join(t.TempDir(), "Caddyfile")
	os.WriteFile(file, []byte(fmt.Sprintf(`{
	admin off
	persist_config off
	longpoll {
		store redis {
			address %s
			prefix test:
			buffer %d
		}
	}
}
http://127.0.0.1:%d {
	%s
}
http://127.0.0.1:%d {
	longpoll_publish /publish/*
}
`, addr, cfg.buffer, pp, cfg.pollSite, bp)), 0o644)
	p := &caddyProc{log: new(syncBuffer), exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile")
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("caddy log:\n%s", p.log)
		}
	})
	p.server = &server{t: t, poll: fmt.Sprintf("http://127.0.0.1:%d", pp), pub: fmt.Sprintf("http://127.0.0.1:%d", bp), client: newClient(t)}
	waitFor(t, "caddy to start", func() bool {
		r, err := p.do(context.Background(), "GET", p.pub+"/publish/c", "")
		return err == nil && r.status == 200
	})
	return p
}

// Two Caddy processes share one Redis: a publish through one answers polls
// held on the other, cursors move between them, and under concurrent
// publishers every poller sees every message exactly once and in the same
// order, across Redis being killed and restarted mid-run.
func TestRedisTwoCaddyProcesses(t *testing.T) {
	srv := redistest.StartPersistent(t)
	bin := buildCaddy(t)
	ports := freePorts(t, 4)
	a, b := startCaddyProc(t, bin, srv.Addr(), ports[0], ports[1]), startCaddyProc(t, bin, srv.Addr(), ports[2], ports[3])

	// Publish through A, a poll held on B is answered; B's cursor resumes
	// on A.
	cursor := b.info("x")["cursor"].(string)
	got := b.pollAsync(context.Background(), b.poll+"/poll/x?since="+cursor)
	b.waitHeld("x", 1)
	pub := a.publish("x", "text/plain", "from A")
	r := <-got
	if r.status != 200 || !strings.Contains(r.body, `"data":"from A"`) {
		t.Fatalf("poll on B after publish on A: %d %s", r.status, r.body)
	}
	b.publish("x", "text/plain", "from B")
	r = a.must("GET", a.poll+"/poll/x?since="+pub["id"].(string), "")
	if r.status != 200 || !strings.Contains(r.body, `"data":"from B"`) || strings.Contains(r.body, "from A") {
		t.Fatalf("A resuming with A's cursor after B's publish: %d %s", r.status, r.body)
	}

	const channels, pollers, publishers, perPublisher = 2, 6, 2, 60
	total := publishers * perPublisher
	procs := []*caddyProc{a, b}
	var published, failedPublishes atomic.Int64
	half := make(chan struct{})
	var halfOnce sync.Once
	outage := make(chan struct{}) // closed once a publish was refused
	var outageOnce sync.Once
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // guards against a hang
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, channels*(pollers+publishers))
	seqs := make([][][]string, channels) // channel → poller → message data in order
	for c := range channels {
		ch := fmt.Sprintf("ch%d", c)
		start := a.info(ch)["cursor"].(string)
		seqs[c] = make([][]string, pollers)
		for p := range pollers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(c), uint64(p)))
				cur := start
				for len(seqs[c][p]) < total {
					proc := procs[rng.IntN(2)]
					r, err := proc.do(ctx, "GET", proc.poll+"/poll/"+ch+"?since="+cur, "")
					switch {
					case ctx.Err() != nil:
						errs <- fmt.Errorf("poller %s/%d: got %d of %d messages", ch, p, len(seqs[c][p]), total)
						return
					case err != nil || r.status == 503:
						time.Sleep(20 * time.Millisecond) // the client's retry pause
					case r.status == 304:
						cur = strings.Trim(r.header.Get("ETag"), `"`)
					case r.status == 200:
						var ans struct {
							Cursor   string
							Gap      bool
							Messages []struct{ Data string }
						}
						if err := json.Unmarshal([]byte(r.body), &ans); err != nil || ans.Gap {
							errs <- fmt.Errorf("poller %s/%d: gap or bad answer: %s", ch, p, r.body)
							return
						}
						for _, m := range ans.Messages {
							seqs[c][p] = append(seqs[c][p], m.Data)
						}
						cur = ans.Cursor
					default:
						errs <- fmt.Errorf("poller %s/%d: %d %s", ch, p, r.status, r.body)
						return
					}
				}
			}()
		}
		for w := range publishers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perPublisher {
					body := fmt.Sprintf("w%d-%d", w, i)
					for try := 0; ; try++ {
						proc := procs[(i+try)%2]
						r, err := proc.do(ctx, "POST", proc.pub+"/publish/"+ch, body, "Idempotency-Key", body)
						if err == nil && r.status == 200 {
							break
						}
						if ctx.Err() != nil {
							errs <- fmt.Errorf("publisher %s/%d stuck at %d: %v %d %s", ch, w, i, err, r.status, r.body)
							return
						}
						if err == nil && r.status != 503 {
							errs <- fmt.Errorf("publisher %s/%d: %d %s", ch, w, r.status, r.body)
							return
						}
						failedPublishes.Add(1)
						outageOnce.Do(func() { close(outage) })
						time.Sleep(20 * time.Millisecond)
					}
					if published.Add(1) == int64(channels*total/2) {
						halfOnce.Do(func() { close(half) })
					}
				}
			}()
		}
	}

	// Mid-run: kill Redis, wait until a publish was refused, restart it.
	select {
	case <-half:
	case <-ctx.Done():
		t.Fatal("publishers never got half way")
	}
	srv.Kill()
	select {
	case <-outage:
	case <-ctx.Done():
		t.Fatal("no publish was refused while Redis was down")
	}
	srv.Restart()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	for c := range channels {
		want := seqs[c][0]
		next := make([]int, publishers)
		for _, data := range want {
			var w, i int
			fmt.Sscanf(data, "w%d-%d", &w, &i)
			if i != next[w] {
				t.Fatalf("ch%d: publisher %d's message %d came when %d was due: %v", c, w, i, next[w], want)
			}
			next[w]++
		}
		for p := 1; p < pollers; p++ {
			if fmt.Sprint(seqs[c][p]) != fmt.Sprint(want) {
				t.Fatalf("ch%d: poller %d saw\n%v\npoller 0 saw\n%v", c, p, seqs[c][p], want)
			}
		}
	}
	for _, p := range procs {
		log := p.log.String()
		if n := strings.Count(log, "redis store unreachable"); n != 1 {
			t.Errorf("the outage was logged %d times by one instance, want once:\n%s", n, log)
		}
		if strings.Contains(log, "store failed") {
			t.Errorf("a store call failed with an error other than unavailable:\n%s", log)
		}
	}
	t.Logf("%d publishes refused while Redis was down, then retried", failedPublishes.Load())
}

// The multi-instance example's Caddyfiles load as written.
func TestMultiInstanceExampleAdapts(t *testing.T) {
	t.Setenv("POLL_PORT", "9001")
	t.Setenv("PUBLISH_PORT", "9101")
	for _, f := range []string{"instance.Caddyfile", "lb.Caddyfile"} {
		src, err := os.ReadFile(filepath.Join("examples", "multi-instance", f))
		if err != nil {
			t.Fatal(err)
		}
		out, warn, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": f})
		if err != nil || len(warn) > 0 {
			t.Fatalf("%s: %v %v", f, err, warn)
		}
		if f == "instance.Caddyfile" && !strings.Contains(string(out), `"type":"redis"`) {
			t.Fatalf("%s adapts without the redis store: %s", f, out)
		}
	}
}
