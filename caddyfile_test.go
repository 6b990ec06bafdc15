package longpoll_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
)

// The Caddyfile from the README, option for option.
const readmeCaddyfile = `{
	longpoll {
		store memory {
			buffer 100 # messages kept per channel (default 100)
			ttl 1h # how long a message is kept (default 1h)
		}
		max_held 100000 # held polls at once, all channels (503 + Retry-After beyond)
	}
}

:8080 {
	longpoll /chat/poll {
		channel chat-{query.chat_id} # a placeholder template; default {http.request.uri.path.file}
		timeout 30s # default 30s
		format json # json (default) or raw
		cursor_param since # query parameter carrying the cursor (default since)
	}
	reverse_proxy localhost:8000 # the app; it never sees a held poll
}

http://127.0.0.1:8081 {
	longpoll_publish /publish/* {
		channel {file} # default {http.request.uri.path.file}
		allow 127.0.0.1/8 ::1 # client addresses allowed to publish (default: loopback only)
		token {env.LONGPOLL_TOKEN} # optional: then Authorization: Bearer <token> is required
		max_size 1MiB # larger bodies get 413 (default 1MiB)
	}
}
`

func TestCaddyfileAdaptsEveryOption(t *testing.T) {
	caddytest.AssertAdapt(t, readmeCaddyfile, "caddyfile", `{
	"apps": {
		"http": {
			"servers": {
				"srv0": {
					"listen": [
						":8080"
					],
					"routes": [
						{
							"match": [
								{
									"path": [
										"/chat/poll"
									]
								}
							],
							"handle": [
								{
									"channel": "chat-{http.request.uri.query.chat_id}",
									"cursor_param": "since",
									"format": "json",
									"handler": "longpoll",
									"timeout": 30000000000
								}
							]
						},
						{
							"handle": [
								{
									"handler": "reverse_proxy",
									"upstreams": [
										{
											"dial": "localhost:8000"
										}
									]
								}
							]
						}
					]
				},
				"srv1": {
					"listen": [
						":8081"
					],
					"routes": [
						{
							"match": [
								{
									"host": [
										"127.0.0.1"
									]
								}
							],
							"handle": [
								{
									"handler": "subroute",
									"routes": [
										{
											"handle": [
												{
													"allow": [
														"127.0.0.1/8",
														"::1"
													],
													"channel": "{http.request.uri.path.file}",
													"handler": "longpoll_publish",
													"max_size": 1048576,
													"token": "{env.LONGPOLL_TOKEN}"
												}
											],
											"match": [
												{
													"path": [
														"/publish/*"
													]
												}
											]
										}
									]
								}
							],
							"terminal": true
						}
					],
					"automatic_https": {
						"skip": [
							"127.0.0.1"
						]
					}
				}
			}
		},
		"longpoll": {
			"store": {
				"buffer": 100,
				"ttl": 3600000000000,
				"type": "memory"
			},
			"max_held": 100000
		}
	}
}`)
}

func TestCaddyfileDefaultsAndRawFormat(t *testing.T) {
	caddytest.AssertAdapt(t, ":8080 {\n\tlongpoll\n\tlongpoll_publish /pub/* {\n\t\tallow 10.0.0.0/8\n\t\tallow 192.0.2.1\n\t}\n\tlongpoll /raw/* {\n\t\tformat raw\n\t}\n}\n", "caddyfile", `{
	"apps": {
		"http": {
			"servers": {
				"srv0": {
					"listen": [
						":8080"
					],
					"routes": [
						{
							"match": [
								{
									"path": [
										"/pub/*"
									]
								}
							],
							"handle": [
								{
									"allow": [
										"10.0.0.0/8",
										"192.0.2.1"
									],
									"handler": "longpoll_publish"
								}
							]
						},
						{
							"match": [
								{
									"path": [
										"/raw/*"
									]
								}
							],
							"handle": [
								{
									"format": "raw",
									"handler": "longpoll"
								}
							]
						},
						{
							"handle": [
								{
									"handler": "longpoll"
								}
							]
						}
					]
				}
			}
		}
	}
}`)
}

// Both directives sort after auth and before the terminal handlers, with no
// order line; publish before poll, so a publish path works beside a
// catch-all poll.
func TestDirectivesAreOrderedBeforeRespond(t *testing.T) {
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(`:8080 {
	reverse_proxy localhost:9
	respond /x "x"
	longpoll /poll
	longpoll_publish /pub
	basic_auth /poll {
		u $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG
	}
}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	idx := func(handler string) int {
		i := strings.Index(s, `"handler":"`+handler+`"`)
		if i < 0 {
			t.Fatalf("%s missing from %s", handler, s)
		}
		return i
	}
	auth, lp, pub, respond, proxy := idx("authentication"), idx("longpoll"), idx("longpoll_publish"), idx("static_response"), idx("reverse_proxy")
	if !(auth < pub && pub < lp && lp < respond && respond < proxy) {
		t.Fatalf("order: authentication %d, longpoll %d, longpoll_publish %d, respond %d, reverse_proxy %d", auth, lp, pub, respond, proxy)
	}
}

func TestCaddyfileRejectsBadOptionsWithLineNumbers(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		line      int
		says      string
	}{
		{"unknown global option", "{\n\tlongpoll {\n\t\tholdall 1\n\t}\n}\n:80\n", 3, `unrecognized longpoll option "holdall"`},
		{"global argument", "{\n\tlongpoll extra\n}\n:80\n", 2, "wrong argument count"},
		{"unknown store", "{\n\tlongpoll {\n\t\tstore etcd\n\t}\n}\n:80\n", 3, "longpoll.stores.etcd"},
		{"store without type", "{\n\tlongpoll {\n\t\tstore\n\t}\n}\n:80\n", 3, "wrong argument count"},
		{"buffer zero", "{\n\tlongpoll {\n\t\tstore memory {\n\t\t\tbuffer 0\n\t\t}\n\t}\n}\n:80\n", 4, "buffer must be a whole number of at least 1"},
		{"buffer not a number", "{\n\tlongpoll {\n\t\tstore memory {\n\t\t\tbuffer lots\n\t\t}\n\t}\n}\n:80\n", 4, "buffer must be"},
		{"bad ttl", "{\n\tlongpoll {\n\t\tstore memory {\n\t\t\tttl soon\n\t\t}\n\t}\n}\n:80\n", 4, "ttl must be a duration"},
		{"unknown memory option", "{\n\tlongpoll {\n\t\tstore memory {\n\t\t\tsize 3\n\t\t}\n\t}\n}\n:80\n", 4, `unrecognized memory store option "size"`},
		{"max_held zero", "{\n\tlongpoll {\n\t\tmax_held 0\n\t}\n}\n:80\n", 3, "max_held must be at least 1"},
		{"max_held negative", "{\n\tlongpoll {\n\t\tmax_held -5\n\t}\n}\n:80\n", 3, "max_held must be a whole number of at least -1"},
		{"bad format", ":80 {\n\tlongpoll {\n\t\tformat xml\n\t}\n}\n", 3, `format must be json or raw, got "xml"`},
		{"bad timeout", ":80 {\n\tlongpoll {\n\t\ttimeout -1s\n\t}\n}\n", 3, "timeout must be a duration above 0"},
		{"timeout without value", ":80 {\n\tlongpoll {\n\t\ttimeout\n\t}\n}\n", 3, "wrong argument count"},
		{"channel with two values", ":80 {\n\tlongpoll {\n\t\tchannel a b\n\t}\n}\n", 3, "wrong argument count"},
		{"unknown poll option", ":80 {\n\tlongpoll {\n\t\tbuffer 3\n\t}\n}\n", 3, `unrecognized longpoll option "buffer"`},
		{"poll extra argument", ":80 {\n\tlongpoll /p extra\n}\n", 2, "wrong argument count"},
		{"bad allow", ":80 {\n\tlongpoll_publish {\n\t\tallow 10.0.0.0/33\n\t}\n}\n", 3, `allow: "10.0.0.0/33" is not an IP address or CIDR range`},
		{"allow without value", ":80 {\n\tlongpoll_publish {\n\t\tallow\n\t}\n}\n", 3, "wrong argument count"},
		{"bad max_size", ":80 {\n\tlongpoll_publish {\n\t\tmax_size huge\n\t}\n}\n", 3, "max_size must be a size"},
		{"unknown publish option", ":80 {\n\tlongpoll_publish {\n\t\ttimeout 3s\n\t}\n}\n", 3, `unrecognized longpoll_publish option "timeout"`},
	} {
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(tc.src), nil)
		if err == nil {
			t.Errorf("%s: adapted without error", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), fmt.Sprintf("Caddyfile:%d", tc.line)) {
			t.Errorf("%s: error %q; want line %d and %q", tc.name, err, tc.line, tc.says)
		}
	}
}

// Every option also works in JSON, and bad JSON values are refused at load
// with a message that names them.
func TestJSONConfigWorksAndIsValidated(t *testing.T) {
	ports := freePorts(t, 2)
	pp, bp := ports[0], ports[1]
	tc := caddytest.NewTester(t)
	tc.InitServer(emptyConfig, "caddyfile")
	tc.InitServer(fmt.Sprintf(`{
		"admin": {"listen": "localhost:%d", "config": {"persist": false}},
		"apps": {
			"longpoll": {"store": {"type": "memory", "buffer": 2, "ttl": "10m"}, "max_held": 10},
			"http": {"servers": {
				"poll": {"listen": ["127.0.0.1:%d"], "routes": [{"handle": [
					{"handler": "longpoll", "channel": "room-{http.request.uri.query.r}", "timeout": "1m", "format": "json", "cursor_param": "c"}]}]},
				"pub": {"listen": ["127.0.0.1:%d"], "routes": [{"handle": [
					{"handler": "longpoll_publish", "channel": "room-{http.request.uri.query.r}", "allow": ["127.0.0.1"], "max_size": 100}]}]}
			}}
		}
	}`, adminPort, pp, bp), "json")
	s := &server{t: t, tc: tc, poll: fmt.Sprintf("http://127.0.0.1:%d", pp), pub: fmt.Sprintf("http://127.0.0.1:%d", bp), client: tc.Client}
	cursor := s.must("GET", s.pub+"/?r=1", "").json(t)["cursor"].(string)
	for i := range 3 {
		if r := s.must("POST", s.pub+"/?r=1", fmt.Sprint(i)); r.status != 200 {
			t.Fatalf("publish: %d %s", r.status, r.body)
		}
	}
	if r := s.must("POST", s.pub+"/?r=1", strings.Repeat("x", 101)); r.status != 413 {
		t.Fatalf("max_size from JSON not applied: %d", r.status)
	}
	r := s.must("GET", s.poll+"/?r=1&c="+cursor, "")
	if ans := r.json(t); ans["gap"] != true || len(ans["messages"].([]any)) != 2 {
		t.Fatalf("buffer 2 and cursor_param c from JSON: %s", r.body)
	}
	got := s.pollAsync(context.Background(), s.poll+"/?r=2")
	waitFor(t, "a held poll", func() bool { return s.must("GET", s.pub+"/?r=2", "").json(t)["subscribers"] == 1.0 })
	s.must("POST", s.pub+"/?r=2", "hi")
	if r := <-got; r.status != 200 || !strings.Contains(r.body, `"channel":"room-2"`) {
		t.Fatalf("poll on room-2 = %d %s", r.status, r.body)
	}

	for _, bad := range []struct{ cfg, says string }{
		{`"longpoll": {"store": {"type": "memory", "buffer": -1}}`, "buffer must be at least 1"},
		{`"longpoll": {"max_held": -2}`, "max_held must be at least 1"},
		{`"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "routes": [{"handle": [{"handler": "longpoll", "format": "xml"}]}]}}}`, "format must be json or raw"},
		{`"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "routes": [{"handle": [{"handler": "longpoll_publish", "allow": ["nowhere"]}]}]}}}`, "is not an IP address or CIDR range"},
		{`"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "routes": [{"handle": [{"handler": "longpoll_publish", "token": "{env.LONGPOLL_UNSET_FOR_TEST}"}]}]}}}`, "token"},
	} {
		caddytest.AssertLoadError(t, fmt.Sprintf(`{"admin": {"listen": "localhost:%d"}, "apps": {%s}}`, adminPort, bad.cfg), "json", bad.says)
	}
}
