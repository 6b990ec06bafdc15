package longpoll_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/caddy-longpoll/longpoll"
)

const parkSite = "longpoll /poll/* {\n\t\tpark\n\t}"

// A parked poll is answered like a held one.
func TestParkedPollIsAnswered(t *testing.T) {
	s := start(t, "", parkSite, "longpoll_publish /publish/*")
	checkLeaks(t, s)

	cursor := s.info("c")["cursor"].(string)
	got := s.pollAsync(context.Background(), s.poll+"/poll/c?since="+cursor)
	s.waitHeld("c", 1)
	pub := s.publish("c", "application/json", `{"n":1}`)
	r := <-got
	if r.status != 200 || r.header.Get("ETag") != `"`+pub["id"].(string)+`"` ||
		!strings.Contains(r.body, `"data":{"n":1}`) || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("parked poll: %d %v %s", r.status, r.header, r.body)
	}
	// Messages waiting: answered at once, on the kept-alive connection.
	r = s.must("GET", s.poll+"/poll/c?since="+cursor, "")
	if r.status != 200 {
		t.Fatalf("poll with messages waiting: %d %v", r.status, r.header)
	}
	// Deleted while parked: 410.
	got = s.pollAsync(context.Background(), s.poll+"/poll/c?since="+pub["id"].(string))
	s.waitHeld("c", 1)
	s.must("DELETE", s.pub+"/publish/c", "")
	if r := <-got; r.status != 410 || !strings.Contains(r.body, "deleted") {
		t.Fatalf("parked poll on a deleted channel: %d %s", r.status, r.body)
	}
}

func TestParkedPollTimesOutWith304(t *testing.T) {
	s := start(t, "", "longpoll /poll/* {\n\t\tpark\n\t\ttimeout 100ms\n\t}", "longpoll_publish /publish/*")
	checkLeaks(t, s)
	cursor := s.info("t")["cursor"].(string)
	r := s.must("GET", s.poll+"/poll/t?since="+cursor, "")
	if r.status != 304 || r.header.Get("ETag") != `"`+cursor+`"` || r.body != "" {
		t.Fatalf("parked poll timeout: %d %v %q", r.status, r.header, r.body)
	}
	if n := s.info("t")["subscribers"]; n != 0.0 {
		t.Fatalf("subscribers after the timeout = %v", n)
	}
}

// A client that goes away frees its parked poll; a store that closes
// answers its parked polls 304.
func TestParkedPollClientGoneAndStoreClosed(t *testing.T) {
	s := start(t, "", parkSite, "longpoll_publish /publish/*")
	checkLeaks(t, s)

	conn := s.dial()
	conn.Write([]byte("GET /poll/gone HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
	s.waitHeld("gone", 1)
	conn.Close()
	s.waitHeld("gone", 0)

	conn = s.dial()
	defer conn.Close()
	conn.Write([]byte("GET /poll/kept HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
	s.waitHeld("kept", 1)
	// A new store (changed config) closes the old one: 304 at once.
	s.reload("longpoll {\n\t\tstore memory {\n\t\t\tbuffer 7\n\t\t}\n\t}", parkSite, "longpoll_publish /publish/*")
	head := readHead(t, conn)
	if !strings.HasPrefix(head, "HTTP/1.1 304 ") || !strings.Contains(head, "\r\nConnection: close\r\n") || !strings.Contains(head, "\r\nEtag: ") {
		t.Fatalf("parked poll when its store closed:\n%s", head)
	}
	// And the connection is closed after the answer.
	if n, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes after a parked poll's answer; want the connection closed", n)
	}
}

// A parked poll's connection goes back to Caddy after the answer: the
// client's next polls on it are served (and parked) again, HEAD included;
// a poll that asks to close it (Connection: close) gets that. Over plain
// HTTP/1.1 and over TLS (HTTP/1.1 by ALPN).
func TestParkedPollKeepsItsConnection(t *testing.T) {
	t.Run("http", func(t *testing.T) {
		s := start(t, "", parkSite, "longpoll_publish /publish/*")
		checkLeaks(t, s)
		conn := s.dial()
		pollsOnOneConnection(t, s, conn)
	})
	t.Run("https", func(t *testing.T) {
		s := &server{t: t, tc: caddytest.NewTester(t)}
		s.tc.InitServer(emptyConfig, "caddyfile")
		ports := freePorts(t, 2)
		s.poll = fmt.Sprintf("https://127.0.0.1:%d", ports[0])
		s.pub = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		s.client = newClient(t)
		s.tc.InitServer(fmt.Sprintf(`{
	admin localhost:%d
	persist_config off
	auto_https disable_redirects
	skip_install_trust
}
https://127.0.0.1:%d {
	tls internal
	%s
}
http://127.0.0.1:%d {
	longpoll_publish /publish/*
}
`, adminPort, ports[0], parkSite, ports[1]), "caddyfile")
		checkLeaks(t, s)
		// Caddy obtains the certificate in the background: handshakes
		// fail until it has.
		var conn *tls.Conn
		waitFor(t, "a TLS handshake", func() bool {
			c, err := tls.Dial("tcp", strings.TrimPrefix(s.poll, "https://"), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			conn = c
			return err == nil
		})
		if p := conn.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
			t.Fatalf("ALPN chose %q", p)
		}
		pollsOnOneConnection(t, s, conn)
	})
}

// pollsOnOneConnection sends polls one after the other on conn, each
// answered by a publish, the last with Connection: close.
func pollsOnOneConnection(t *testing.T, s *server, conn net.Conn) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	cursor := s.info("k")["cursor"].(string)
	for i, req := range []string{"GET", "GET", "HEAD", "GET close"} {
		method, closing := strings.CutSuffix(req, " close")
		hdr := ""
		if closing {
			hdr = "Connection: close\r\n"
		}
		fmt.Fprintf(conn, "%s /poll/k?since=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n", method, cursor, hdr)
		s.waitHeld("k", 1)
		waitFor(t, "the poll parked", func() bool { return longpoll.Parked() == 1 })
		pub := s.publish("k", "text/plain", fmt.Sprint("m", i))
		res, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("poll %d (%s): %v", i, req, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || res.Close != closing || (method == "GET") != strings.Contains(string(body), fmt.Sprintf(`"data":"m%d"`, i)) {
			t.Fatalf("poll %d (%s) on the same connection: %d close=%v %q", i, req, res.StatusCode, res.Close, body)
		}
		cursor = pub["id"].(string)
	}
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after Connection: close: read %d, %v; want EOF", n, err)
	}
}

// dial opens a raw connection to the poll site.
func (s *server) dial() net.Conn {
	s.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.poll, "http://"))
	if err != nil {
		s.t.Fatal(err)
	}
	return conn
}

// readHead reads a response's status line and headers from a raw connection.
func readHead(t *testing.T, conn net.Conn) string {
	t.Helper()
	br := bufio.NewReader(conn)
	var head strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the answer: %v (so far %q)", err, head.String())
		}
		head.WriteString(line)
		if line == "\r\n" {
			return head.String()
		}
	}
}

// A poll parked before a reload and answered after it keeps its
// connection, handed to the new config's server: the client's next request
// on it is served by the new config.
func TestParkedPollKeepsItsConnectionAcrossReload(t *testing.T) {
	s := start(t, "", parkSite, "longpoll_publish /publish/*")
	checkLeaks(t, s)
	conn := s.dial()
	defer conn.Close()
	br := bufio.NewReader(conn)
	cursor := s.info("r")["cursor"].(string)
	fmt.Fprintf(conn, "GET /poll/r?since=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", cursor)
	s.waitHeld("r", 1)
	waitFor(t, "the poll parked", func() bool { return longpoll.Parked() == 1 })
	s.reload("", parkSite+"\n\trespond /hello \"new config\"", "longpoll_publish /publish/*")
	// Any poll the new server takes tells which server serves the address.
	s.publish("other", "text/plain", "x")
	if r := s.must("GET", s.poll+"/poll/other?since="+cursor, ""); r.status != 200 {
		t.Fatalf("a poll with a message waiting, on the new config: %d", r.status)
	}
	s.publish("r", "text/plain", "after reload")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.Close || !strings.Contains(string(body), "after reload") {
		t.Fatalf("the parked poll after the reload: %d close=%v %q", res.StatusCode, res.Close, body)
	}
	fmt.Fprintf(conn, "GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
	res, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if string(body) != "new config" {
		t.Fatalf("the next request on the kept connection: %d %q, want the new config's answer", res.StatusCode, body)
	}
}
