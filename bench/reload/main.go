// Command reload measures a config reload under held polls against a real
// Caddy process built with this plugin: it holds N polls, times POST /load of
// a changed config, then publishes one message and checks that every poll
// receives it (directly, or by re-polling with its cursor after a 304).
//
//	go run ./cmd/build-caddy && go run ./bench/reload -polls 10000
//
// Each held poll is one connection: this process and Caddy each need N open
// files (the hard limit here is 20,000 per process).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func main() {
	caddyBin := flag.String("caddy", "./caddy", "Caddy binary built with the plugin")
	polls := flag.Int("polls", 10000, "polls to hold across the reload")
	flag.Parse()
	if err := run(*caddyBin, *polls); err != nil {
		fmt.Fprintln(os.Stderr, "reload:", err)
		os.Exit(1)
	}
}

func run(bin string, n int) error {
	admin, pollPort, pubPort := freePort(), freePort(), freePort()
	config := func(extra string) string {
		return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	log {
		level ERROR
	}
}
http://127.0.0.1:%d {
	longpoll /poll/* {
		timeout 5m
	}
	%s
}
http://127.0.0.1:%d {
	longpoll_publish /publish/*
}
`, admin, pollPort, extra, pubPort)
	}
	dir, err := os.MkdirTemp("", "reload")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(config("")), 0o644); err != nil {
		return err
	}
	cmd := exec.Command(bin, "run", "--config", file, "--adapter", "caddyfile")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n + 10, MaxConnsPerHost: 0}}
	pub := fmt.Sprintf("http://127.0.0.1:%d/publish/c", pubPort)
	info := func() (map[string]any, error) {
		res, err := client.Get(pub)
		if err != nil {
			return nil, err
		}
		defer res.Body.Close()
		var v map[string]any
		return v, json.NewDecoder(res.Body).Decode(&v)
	}
	var inf map[string]any
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if inf, err = info(); err == nil {
			break
		}
		if time.Since(start) > 30*time.Second {
			return fmt.Errorf("caddy did not start: %v", err)
		}
	}
	cursor := inf["cursor"].(string)

	pollURL := fmt.Sprintf("http://127.0.0.1:%d/poll/c?since=", pollPort)
	var delivered, after304, failed atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			c := cursor
			for range 3 {
				res, err := client.Get(pollURL + c)
				if err != nil {
					failed.Add(1)
					return
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				switch res.StatusCode {
				case 200:
					if bytes.Contains(body, []byte(`"after reload"`)) {
						delivered.Add(1)
						return
					}
				case 304:
					after304.Add(1)
				default:
					failed.Add(1)
					return
				}
				c = strings.Trim(res.Header.Get("ETag"), `"`)
			}
			failed.Add(1)
		})
	}
	for {
		inf, err = info()
		if err != nil {
			return err
		}
		if int(inf["subscribers"].(float64)) == n {
			break
		}
		if failed.Load() > 0 {
			return fmt.Errorf("%d polls failed before the reload", failed.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Printf("held polls: %d\n", n)

	began := time.Now()
	res, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/load", admin), "text/caddyfile",
		strings.NewReader(config(`respond /hello "new config"`)))
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(res.Body)
	res.Body.Close()
	reload := time.Since(began)
	if res.StatusCode != 200 {
		return fmt.Errorf("reload: %d %s", res.StatusCode, msg)
	}
	inf, _ = info()
	fmt.Printf("reload (POST /load) took: %v; held polls after it: %v\n", reload, inf["subscribers"])

	began = time.Now()
	res, err = http.Post(pub, "text/plain", strings.NewReader("after reload"))
	if err != nil {
		return err
	}
	res.Body.Close()
	wg.Wait()
	fmt.Printf("publish to last delivery: %v\n", time.Since(began))
	fmt.Printf("delivered: %d of %d, answered 304 first: %d, failed or lost: %d\n", delivered.Load(), n, after304.Load(), failed.Load())
	if delivered.Load() != int64(n) {
		return fmt.Errorf("lost %d messages", int64(n)-delivered.Load())
	}
	return nil
}
