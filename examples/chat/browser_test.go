package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"
)

// chromium finds the browser; without it the test is skipped, except in CI.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found (apt-get install -y chromium)")
	}
	t.Skip("chromium not found; install it with: apt-get install -y chromium")
	return ""
}

func freePorts(t *testing.T, n int) []string {
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

// startChat runs the demo as `go run ./examples/chat` does, on free ports.
func startChat(t *testing.T) options {
	addrs := freePorts(t, 3)
	o := options{Addr: addrs[0], App: addrs[1], Publish: addrs[2]}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, func(string) { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("chat did not start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("chat stopped with %v", err)
		}
	})
	return o
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

// Two pages in one room see each other's lines; a page in another room sees
// neither; no poll reaches the app, while Caddy answered polls.
func TestChatInBrowser(t *testing.T) {
	bin := chromium(t)
	o := startChat(t)
	base := "http://" + o.Addr

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.Headless,
			chromedp.Flag("disable-gpu", true), chromedp.WindowSize(900, 700))...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	// Guards against a hang; not a timing check.
	browser, cancelTimeout := context.WithTimeout(browser, 2*time.Minute)
	defer cancelTimeout()
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}

	open := func(room, user string) context.Context {
		tab, _ := chromedp.NewContext(browser)
		err := chromedp.Do(tab, chromedp.Navigate(fmt.Sprintf("%s/r/%s?user=%s", base, room, user)))
		if err == nil {
			// The page's poll is held.
			_, err = chromedp.Run(tab, chromedp.Poll[bool](`document.getElementById("status").dataset.status === "live"`))
		}
		if err != nil {
			st, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.documentElement.outerHTML.slice(0, 3000)`))
			t.Fatalf("opening %s as %s: %v\n%s", room, user, err, st)
		}
		return tab
	}
	say := func(tab context.Context, text string) {
		t.Helper()
		js, _ := json.Marshal(text)
		// As a user does: fill the box, submit the form (its submit event
		// runs the page's code, which POSTs /say).
		_, err := chromedp.Run(tab, chromedp.Evaluate[bool](fmt.Sprintf(
			`document.getElementById("text").value = %s; document.getElementById("say").requestSubmit(); true`, js)))
		if err != nil {
			t.Fatalf("saying %q: %v", text, err)
		}
	}
	waitLines := func(tab context.Context, n int) []string {
		t.Helper()
		_, err := chromedp.Run(tab, chromedp.Poll[bool](fmt.Sprintf(`document.querySelectorAll("#lines li").length >= %d`, n)))
		if err != nil {
			t.Fatalf("waiting for %d lines: %v", n, err)
		}
		lines, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#lines li")].map(li => li.textContent)`))
		if err != nil {
			t.Fatalf("waiting for %d lines: %v", n, err)
		}
		return lines
	}

	ann, bob, eve := open("lobby", "ann"), open("lobby", "bob"), open("attic", "eve")
	say(ann, "hello from ann")
	if got := waitLines(bob, 1); !strings.Contains(got[0], "hello from ann") {
		t.Fatalf("bob sees %q", got)
	}
	say(bob, "hi ann, bob here")
	want := []string{"annhello from ann", "bobhi ann, bob here"}
	for name, tab := range map[string]context.Context{"ann": ann, "bob": bob} {
		if got := waitLines(tab, 2); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("%s sees %q, want %q", name, got, want)
		}
	}
	// Eve's room gets a line of its own after the lobby's; when it has
	// arrived, the lobby's would have too, had they leaked.
	say(eve, "anyone up here?")
	if got := waitLines(eve, 1); len(got) != 1 || got[0] != "eveanyone up here?" {
		t.Fatalf("eve in another room sees %q", got)
	}

	// The two-pages state, as a user sees it.
	dir := t.TempDir()
	for name, tab := range map[string]context.Context{"ann": ann, "bob": bob} {
		shot, err := chromedp.Run(tab, chromedp.FullScreenshot(100)) // quality 100: PNG
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "chat-"+name+".png")
		if err := os.WriteFile(path, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		checkNotBlank(t, path, shot)
		if keep := os.Getenv("CHAT_SCREENSHOT_DIR"); keep != "" {
			os.WriteFile(filepath.Join(keep, "chat-"+name+".png"), shot, 0o644)
		}
		t.Logf("screenshot of %s's page: %s (%d bytes)", name, path, len(shot))
	}

	// The app never saw a poll; Caddy answered them.
	var stats struct {
		PollRequests int            `json:"poll_requests"`
		Requests     map[string]int `json:"requests"`
	}
	getJSON(t, base+"/stats", &stats)
	if stats.PollRequests != 0 || stats.Requests["/say"] != 3 {
		t.Fatalf("app stats: %+v; want no polls and 3 lines said", stats)
	}
	answered := metric(t, "http://"+o.Publish+"/metrics", "caddy_longpoll_polls_answered_total")
	if answered < 3 {
		t.Fatalf("caddy_longpoll_polls_answered_total = %v, want at least 3 (ann's, bob's and eve's lines)", answered)
	}
	t.Logf("app saw %v; Caddy answered %v polls with messages", stats.Requests, answered)
}

// checkNotBlank fails unless the PNG has more than one colour.
func checkNotBlank(t *testing.T, path string, b []byte) {
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s is not a PNG: %v", path, err)
	}
	bounds := img.Bounds()
	first := img.At(bounds.Min.X, bounds.Min.Y)
	r0, g0, b0, _ := first.RGBA()
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 3 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 3 {
			r, g, b, _ := img.At(x, y).RGBA()
			if r != r0 || g != g0 || b != b0 {
				return
			}
		}
	}
	t.Fatalf("%s is blank: one colour, %dx%d", path, bounds.Dx(), bounds.Dy())
}

// metric reads one unlabelled counter from a Prometheus text endpoint.
func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("%s has no %s:\n%s", url, name, body)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Caddy's storage clean-up lock: refreshed every 5 s until it
		// sees the lock is gone. Caddy's, not ours.
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"))
}
