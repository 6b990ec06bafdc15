package longpoll_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	caddyBinOnce sync.Once
	caddyBin     string
	caddyBinErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if caddyBin != "" {
		os.RemoveAll(filepath.Dir(caddyBin))
	}
	os.Exit(code)
}

// buildCaddy builds ./cmd/caddy (Caddy with this plugin) once per test run.
func buildCaddy(t *testing.T) string {
	t.Helper()
	caddyBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "longpoll-caddy")
		if err != nil {
			caddyBinErr = err
			return
		}
		caddyBin = filepath.Join(dir, "caddy")
		out, err := exec.Command("go", "build", "-o", caddyBin, "./cmd/caddy").CombinedOutput()
		if err != nil {
			caddyBinErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	if caddyBinErr != nil {
		t.Fatal(caddyBinErr)
	}
	return caddyBin
}

// When the Caddy process exits (SIGINT, caddy stop), held polls are answered
// 304 at once, instead of holding the exit for their timeout; parked polls
// too.
func TestProcessExitAnswersHeldPolls(t *testing.T) {
	for name, park := range map[string]string{"held": "", "parked": "park"} {
		t.Run(name, func(t *testing.T) { processExitAnswersPolls(t, park) })
	}
}

func processExitAnswersPolls(t *testing.T, park string) {
	bin := buildCaddy(t)
	ports := freePorts(t, 2)
	pp, bp := ports[0], ports[1]
	file := filepath.Join(t.TempDir(), "Caddyfile")
	os.WriteFile(file, []byte(fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	longpoll /poll/* {
		timeout 1h
		%s
	}
}
http://127.0.0.1:%d {
	longpoll_publish /publish/*
}
`, pp, park, bp)), 0o644)
	cmd := exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed when the process is gone
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	s := &server{t: t, poll: fmt.Sprintf("http://127.0.0.1:%d", pp), pub: fmt.Sprintf("http://127.0.0.1:%d", bp)}
	s.client = newClient(t)
	waitFor(t, "caddy to start", func() bool {
		_, err := s.do(context.Background(), "GET", s.pub+"/publish/c", "")
		return err == nil
	})
	var polls []<-chan resp
	for range 20 {
		polls = append(polls, s.pollAsync(context.Background(), s.poll+"/poll/c"))
	}
	s.waitHeld("c", 20)
	cmd.Process.Signal(syscall.SIGINT)
	guard := time.After(time.Minute) // guards against a hang; not a timing check
	for _, p := range polls {
		select {
		case r := <-p:
			if r.status != 304 || r.header.Get("ETag") == "" {
				t.Fatalf("held poll at exit = %d %v %s", r.status, r.header, r.body)
			}
		case <-guard:
			t.Fatal("held polls were not answered when Caddy exited")
		}
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("caddy exited with %v", exitErr)
		}
	case <-guard:
		t.Fatal("caddy did not exit")
	}
}
