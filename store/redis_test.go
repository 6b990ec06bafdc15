package store

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is a redis-server this test started on a free loopback port.
type redisServer struct {
	t    testing.TB
	port int
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts a redis-server; without the binary the test is skipped,
// except in CI, where it fails.
func startRedis(t testing.TB) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server not found (apt-get install -y redis-server)")
		}
		t.Skip("redis-server not found; install it with: apt-get install -y redis-server")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &redisServer{t: t, port: port, dir: t.TempDir()}
	s.start(bin)
	t.Cleanup(s.kill)
	return s
}

func (s *redisServer) start(bin string) {
	s.t.Helper()
	s.cmd = exec.Command(bin, "--port", fmt.Sprint(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log"))
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(s.cmd, s.done)
	c := redis.NewClient(&redis.Options{Addr: s.addr()})
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			s.t.Fatal("redis-server did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *redisServer) addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// kill stops the server at once; its data is lost.
func (s *redisServer) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		<-s.done
	}
}

// restart starts an empty server on the same port.
func (s *redisServer) restart() {
	s.kill()
	bin, _ := exec.LookPath("redis-server")
	s.start(bin)
}

// countingNotifier records what a store tells it.
type countingNotifier struct {
	mu    sync.Mutex
	woken map[string]int
	gone  map[string]int
	all   int
	ch    chan string // every call, if not nil
}

func newCountingNotifier() *countingNotifier {
	return &countingNotifier{woken: map[string]int{}, gone: map[string]int{}, ch: make(chan string, 1000)}
}

// send reports a call without ever blocking the store's listener.
func (n *countingNotifier) send(s string) {
	select {
	case n.ch <- s:
	default:
	}
}

func (n *countingNotifier) Wake(c string) int {
	n.mu.Lock()
	n.woken[c]++
	n.mu.Unlock()
	n.send("wake " + c)
	return 0
}

func (n *countingNotifier) Gone(c string) int {
	n.mu.Lock()
	n.gone[c]++
	n.mu.Unlock()
	n.send("gone " + c)
	return 0
}

func (n *countingNotifier) WakeAll() int {
	n.mu.Lock()
	n.all++
	n.mu.Unlock()
	n.send("all")
	return 0
}

func openRedis(t *testing.T, srv *redisServer, prefix string, buffer int, ttl time.Duration, now func() time.Time, n Notifier) *Redis {
	if n == nil {
		n = newCountingNotifier()
	}
	r := NewRedis(RedisConfig{Options: &redis.Options{Addr: srv.addr(), MaxRetries: -1}, Prefix: prefix, Buffer: buffer, TTL: ttl, Now: now}, n)
	t.Cleanup(func() { r.Close() })
	return r
}

func TestRedisContract(t *testing.T) {
	srv := startRedis(t)
	i := 0
	RunContract(t, Harness{Open: func(t *testing.T, buffer int, ttl time.Duration) (Store, func(time.Duration)) {
		i++
		clock := &fakeClock{now: time.Now()}
		return openRedis(t, srv, fmt.Sprintf("test%d:", i), buffer, ttl, clock.Now, nil), clock.Advance
	}})
}
