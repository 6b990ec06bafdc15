package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
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

	"github.com/caddy-longpoll/longpoll/examples/internal/freeport"
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

// startChat runs the demo as `go run ./examples/chat` does, on free ports.
func startChat(t *testing.T) options {
	addrs := freeport.Addrs(t, 3)
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

// headless starts Chromium for the test, stopped when it ends.
func headless(t *testing.T) context.Context {
	bin := chromium(t)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.Headless,
			chromedp.Flag("disable-gpu", true), chromedp.WindowSize(900, 700))...)
	t.Cleanup(cancelAlloc)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	// Guards against a hang; not a timing check.
	browser, cancelTimeout := context.WithTimeout(browser, 2*time.Minute)
	t.Cleanup(cancelTimeout)
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return browser
}

// person is someone at a browser of their own: a browser context with its
// own cookies (session and grant) and storage, and one tab.
type person struct {
	t    *testing.T
	name string
	base string // the chat's URL
	tab  context.Context
}

func newPerson(t *testing.T, browser context.Context, base, name string) *person {
	tab, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	return &person{t: t, name: name, base: base, tab: tab}
}

// open loads a room's page and waits until its poll is held ("live") or
// has stopped ("closed": refused); it returns which.
func (p *person) open(room string) string {
	p.t.Helper()
	err := chromedp.Do(p.tab, chromedp.Navigate(fmt.Sprintf("%s/r/%s?user=%s", p.base, room, p.name)))
	var status string
	if err == nil {
		status, err = chromedp.Run(p.tab, chromedp.Poll[string](
			`["live", "closed"].includes(document.getElementById("status").dataset.status) && document.getElementById("status").dataset.status`))
	}
	if err != nil {
		p.fatalf("opening %s: %v", room, err)
	}
	return status
}

// join clicks the page's Join button and waits until the room's poll is
// held.
func (p *person) join() {
	p.t.Helper()
	err := chromedp.Do(p.tab, chromedp.Click(chromedp.CSS("#join"), chromedp.NodeVisible))
	if err == nil {
		_, err = chromedp.Run(p.tab, chromedp.Poll[bool](`document.getElementById("status").dataset.status === "live"`))
	}
	if err != nil {
		p.fatalf("joining: %v", err)
	}
}

// say types a line and sends it, as a user does: fill the box, submit the
// form (its submit event runs the page's code, which POSTs /say).
func (p *person) say(text string) {
	p.t.Helper()
	js, _ := json.Marshal(text)
	_, err := chromedp.Run(p.tab, chromedp.Evaluate[bool](fmt.Sprintf(
		`document.getElementById("text").value = %s; document.getElementById("say").requestSubmit(); true`, js)))
	if err != nil {
		p.fatalf("saying %q: %v", text, err)
	}
}

// lines waits until the page shows at least n lines and returns them all.
func (p *person) lines(n int) []string {
	p.t.Helper()
	_, err := chromedp.Run(p.tab, chromedp.Poll[bool](fmt.Sprintf(`document.querySelectorAll("#lines li").length >= %d`, n)))
	var lines []string
	if err == nil {
		lines, err = chromedp.Run(p.tab, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#lines li")].map(li => li.textContent)`))
	}
	if err != nil {
		p.fatalf("waiting for %d lines: %v", n, err)
	}
	return lines
}

// eval runs a JavaScript expression in the page, awaiting a promise.
func eval[T any](p *person, expr string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.tab, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.fatalf("%s: %v", expr, err)
	}
	return v
}

// fatalf fails the test with the page's HTML.
func (p *person) fatalf(format string, args ...any) {
	p.t.Helper()
	html, _ := chromedp.Run(p.tab, chromedp.Evaluate[string](`document.documentElement.outerHTML.slice(0, 3000)`))
	p.t.Fatalf("%s: %s\n%s", p.name, fmt.Sprintf(format, args...), html)
}

// Two pages in one room see each other's lines; a page in another room sees
// neither; no poll reaches the app, while Caddy answered polls.
func TestChatInBrowser(t *testing.T) {
	browser := headless(t)
	o := startChat(t)
	base := "http://" + o.Addr

	ann, bob, eve := newPerson(t, browser, base, "ann"), newPerson(t, browser, base, "bob"), newPerson(t, browser, base, "eve")
	for _, p := range []*person{ann, bob} {
		if st := p.open("lobby"); st != "live" {
			p.fatalf("the lobby's poll is %s, want live (every browser has joined the lobby)", st)
		}
	}
	if st := eve.open("attic"); st != "closed" {
		eve.fatalf("the attic's poll is %s before joining it, want closed", st)
	}
	eve.join()
	ann.say("hello from ann")
	if got := bob.lines(1); !strings.Contains(got[0], "hello from ann") {
		t.Fatalf("bob sees %q", got)
	}
	bob.say("hi ann, bob here")
	want := []string{"annhello from ann", "bobhi ann, bob here"}
	for _, p := range []*person{ann, bob} {
		if got := p.lines(2); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("%s sees %q, want %q", p.name, got, want)
		}
	}
	// Eve's room gets a line of its own after the lobby's; when it has
	// arrived, the lobby's would have too, had they leaked.
	eve.say("anyone up here?")
	if got := eve.lines(1); len(got) != 1 || got[0] != "eveanyone up here?" {
		t.Fatalf("eve in another room sees %q", got)
	}

	// The two-pages state, as a user sees it.
	for _, p := range []*person{ann, bob} {
		screenshot(t, p, "chat-"+p.name+".png")
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

// A browser that has not joined a room gets 403 on its poll and sees none
// of its lines, even as others talk there; joining it (a new grant) lets
// it in, and the next line reaches it.
func TestChatRoomNeedsJoining(t *testing.T) {
	browser := headless(t)
	o := startChat(t)
	base := "http://" + o.Addr

	bob, eve := newPerson(t, browser, base, "bob"), newPerson(t, browser, base, "eve")
	bob.open("attic")
	bob.join()

	// Eve has not joined the attic: Caddy refuses its poll, and the page
	// says so, offers to join, and shows no line and no box to write in.
	if st := eve.open("attic"); st != "closed" {
		eve.fatalf("the attic's poll is %s, want closed", st)
	}
	if err := chromedp.Do(eve.tab, chromedp.WaitVisible(chromedp.CSS("#join"))); err != nil {
		eve.fatalf("no Join button: %v", err)
	}
	// What eve's page shows: the refusal's status and reason, whether the
	// box to write in is visible, how many lines.
	refused := func() (status, why string, sayShown bool, lines int) {
		got := eval[struct {
			Status   string
			Why      string
			SayShown bool
			Lines    int
		}](eve, `({status: document.getElementById("refused").dataset.status,
			why: document.getElementById("refused").checkVisibility() ? document.getElementById("refused-why").textContent : "",
			sayShown: document.getElementById("say").checkVisibility(),
			lines: document.querySelectorAll("#lines li").length})`)
		return got.Status, got.Why, got.SayShown, got.Lines
	}
	if status, why, sayShown, n := refused(); status != "403" || !strings.Contains(why, "not joined #attic") || sayShown || n != 0 {
		eve.fatalf("refused page: status %q, %q, say box shown %v, %d lines; want 403, not joined, not shown, none", status, why, sayShown, n)
	}
	screenshot(t, eve, "chat-eve-refused.png")

	// Bob talks in the attic; the line has been published when his page
	// shows it.
	bob.say("the attic's secret")
	if got := bob.lines(1); got[0] != "bobthe attic's secret" {
		t.Fatalf("bob sees %q", got)
	}
	// Eve's page polls no more; a poll of her own, with her cookies, is
	// refused too; the page afresh shows none of the room's lines; the app
	// does not let her write there.
	if st := eval[int](eve, `fetch("/chat/poll?room=attic").then(r => r.status)`); st != http.StatusForbidden {
		t.Fatalf("eve's own poll of the attic: %d, want 403", st)
	}
	if st := eve.open("attic"); st != "closed" {
		eve.fatalf("the attic's poll is %s after a reload, want closed", st)
	}
	if status, _, _, n := refused(); status != "403" || n != 0 {
		eve.fatalf("reloaded: status %q, %d lines; want 403 and none", status, n)
	}
	said := eval[int](eve, `fetch("/say", {method: "POST", headers: {"Content-Type": "application/json"},
		body: JSON.stringify({room: "attic", user: "eve", text: "let me in"})}).then(r => r.status)`)
	if said != http.StatusForbidden {
		t.Fatalf("eve saying something in the attic: %d, want 403", said)
	}

	// Eve joins: a new grant lists the attic, her page polls it again and
	// the next line reaches her.
	eve.join()
	if status, why, sayShown, _ := refused(); status != "" || why != "" || !sayShown {
		eve.fatalf("joined: refusal status %q, %q, say box shown %v; want no refusal and the box", status, why, sayShown)
	}
	bob.say("welcome, eve")
	got := eve.lines(2)
	if got[len(got)-1] != "bobwelcome, eve" {
		t.Fatalf("eve sees %q after joining, want bob's welcome last", got)
	}
	eve.say("thanks!")
	if got := bob.lines(3); got[2] != "evethanks!" {
		t.Fatalf("bob sees %q", got)
	}

	forbidden := metric(t, "http://"+o.Publish+"/metrics", `caddy_longpoll_polls_rejected_total{reason="forbidden"}`)
	if forbidden < 3 {
		t.Fatalf(`polls_rejected_total{reason="forbidden"} = %v, want at least 3 (eve's page twice, her own poll)`, forbidden)
	}
	var stats struct {
		PollRequests int `json:"poll_requests"`
	}
	getJSON(t, base+"/stats", &stats)
	if stats.PollRequests != 0 {
		t.Fatalf("the app saw %d polls, want none: Caddy refuses them", stats.PollRequests)
	}
}

// screenshot saves the page as a PNG (into $CHAT_SCREENSHOT_DIR too, if
// set) and checks that it is not blank.
func screenshot(t *testing.T, p *person, name string) {
	t.Helper()
	shot, err := chromedp.Run(p.tab, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	checkNotBlank(t, path, shot)
	if keep := os.Getenv("CHAT_SCREENSHOT_DIR"); keep != "" {
		os.WriteFile(filepath.Join(keep, name), shot, 0o644)
	}
	t.Logf("screenshot of %s's page: %s (%d bytes)", p.name, path, len(shot))
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

// metric reads one counter from a Prometheus text endpoint: name, with its
// labels if it has any (`x_total{reason="forbidden"}`).
func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(body)
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
