package longpoll_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
)

// update rewrites the JSON half of every golden file with what its Caddyfile
// adapts to; read the result with git diff before committing it.
var update = flag.Bool("update", false, "rewrite the JSON in testdata/*.caddyfiletest with what each Caddyfile adapts to")

// Each testdata/*.caddyfiletest is one feature: a Caddyfile, a line
// "----------", and the JSON it adapts to, as in Caddy's own
// caddytest/integration/caddyfile_adapt. The JSON holds what the parser
// writes, not the defaults that Provision fills in later.
func TestCaddyfileAdaptsAsGoldenFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.caddyfiletest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.caddyfiletest")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".caddyfiletest"), func(t *testing.T) {
			caddyfile, want := readGolden(t, file)
			if *update {
				out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
				if err != nil {
					t.Fatal(err)
				}
				var got bytes.Buffer
				if err := json.Indent(&got, out, "", "\t"); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, []byte(caddyfile+goldenSeparator+got.String()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			// CompareAdapt prints the diff (- golden, + adapted) and logs
			// warnings, such as the README block's not being caddy fmt's layout.
			if !caddytest.CompareAdapt(t, file, caddyfile, "caddyfile", want) {
				t.Errorf("%s: the Caddyfile does not adapt to the JSON below its ---------- line", file)
			}
		})
	}
}

// The README's Caddyfile reference block is the Caddyfile of
// testdata/readme.caddyfiletest, so every option the README shows is adapted
// and checked.
func TestCaddyfileReadmeReferenceIsAGoldenFile(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok1 := strings.Cut(string(readme), "## Caddyfile reference")
	_, block, ok2 := strings.Cut(section, "```caddyfile\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok1 || !ok2 || !ok3 {
		t.Fatal("README.md has no ```caddyfile block under ## Caddyfile reference")
	}
	caddyfile, _ := readGolden(t, filepath.Join("testdata", "readme.caddyfiletest"))
	if got := strings.TrimSpace(block) + "\n"; got != caddyfile {
		t.Errorf("the README's Caddyfile reference block is not testdata/readme.caddyfiletest's Caddyfile:\n%s\nwant:\n%s", got, caddyfile)
	}
}

// goldenSeparator is the line between a golden file's Caddyfile and its JSON.
const goldenSeparator = "----------\n"

// readGolden splits a golden file into its Caddyfile (ending in one newline,
// as caddy fmt writes it) and its JSON.
func readGolden(t *testing.T, file string) (caddyfile, jsonOut string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	caddyfile, jsonOut, ok := strings.Cut(string(data), "\n"+goldenSeparator)
	if !ok {
		t.Fatalf("%s: no line %q between the Caddyfile and the JSON", file, strings.TrimSpace(goldenSeparator))
	}
	return strings.TrimSpace(caddyfile) + "\n", strings.TrimSpace(jsonOut)
}

func TestCaddyfileRejectsBadOptionsWithLineNumbers(t *testing.T) {
	assertAdaptErrors(t, []adaptError{
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
	})
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
		{`"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "routes": [{"handle": [{"handler": "longpoll", "auth": {"method": "jwt", "keys": [{"file": "/nonexistent/app.pem"}]}}]}]}}}`, "auth jwt: keys[0]: open /nonexistent/app.pem"},
		{`"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "routes": [{"handle": [{"handler": "longpoll", "auth": {"method": "jwt"}}]}]}}}`, "auth jwt: no keys"},
		{`"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "routes": [{"handle": [{"handler": "longpoll_grip", "sig_key": "base64:not base64!"}]}]}}}`, "sig_key: after base64:"},
		{`"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "routes": [{"handle": [{"handler": "longpoll_publish", "auth": {"method": "jwt", "keys": [{"secret": "{env.LONGPOLL_UNSET_FOR_TEST}"}]}}]}]}}}`, "is empty once its placeholders are replaced"},
		{`"http": {"servers": {"s": {"listen": ["127.0.0.1:0"], "routes": [{"handle": [{"handler": "longpoll", "auth": {"method": "jwt", "keys": [{"secret": "0123456789abcdef0123456789abcdef", "file": "x.pem"}]}}]}]}}}`, "a secret or a file, not both"},
	} {
		caddytest.AssertLoadError(t, fmt.Sprintf(`{"admin": {"listen": "localhost:%d"}, "apps": {%s}}`, adminPort, bad.cfg), "json", bad.says)
	}
}

// auth jwt reads its keys while the Caddyfile is adapted, so a bad key is
// an error with its line.
func TestCaddyfileRefusesBadKeysWithLineNumbers(t *testing.T) {
	dir := t.TempDir()
	private := filepath.Join(dir, "private.pem")
	if err := os.WriteFile(private, []byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIG8ZKN0tf3ijL4jUnsPL0AlTg7k1Zb8Yo1iTUmyjA7AV\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LP_TEST_EMPTY", "")
	t.Setenv("LP_TEST_SHORT", "short")
	site := func(lines ...string) string {
		return ":80 {\n\tlongpoll {\n\t\tauth jwt {\n\t\t\t" + strings.Join(lines, "\n\t\t\t") + "\n\t\t}\n\t}\n}\n"
	}
	assertAdaptErrors(t, []adaptError{
		{"missing key_file", site("key_file " + filepath.Join(dir, "nope.pem")), 4, "no such file"},
		{"private key", site("key_file " + private), 4, "is a PRIVATE KEY: give the public key"},
		{"not PEM", site("key_file caddyfile_test.go"), 4, "no PEM block"},
		{"empty secret", site("key {env.LP_TEST_EMPTY}"), 4, `secret "{env.LP_TEST_EMPTY}" is empty once its placeholders are replaced`},
		{"short secret", site("key {env.LP_TEST_SHORT}"), 4, "HMAC secret is 5 bytes, want at least 32"},
		{"same kid twice", site("key_file testdata/keys/app-ed25519.pem k", "key 0123456789abcdef0123456789abcdef k"), 5, `same kid "k"`},
		{"same key twice", site("key_file testdata/keys/app-ed25519.pem", "key_file testdata/keys/app-ed25519.pem"), 5, "same kid"},
		{"no keys", site("cookie lp_grant"), 3, "needs at least one key or key_file"},
		{"key with three args", site("key a b c"), 4, "wrong argument count"},
		{"bad leeway", site("key_file testdata/keys/app-ed25519.pem", "leeway soon"), 5, "leeway must be a duration"},
		{"unknown option", site("key_file testdata/keys/app-ed25519.pem", "issuer me"), 5, `unrecognized auth jwt option "issuer"`},
		{"unknown method", ":80 {\n\tlongpoll {\n\t\tauth basic\n\t}\n}\n", 3, "longpoll.auth.basic"},
		{"auth without method", ":80 {\n\tlongpoll_publish {\n\t\tauth\n\t}\n}\n", 3, "wrong argument count"},
	})
}

// adaptError is a Caddyfile that must not adapt: the error names the line
// and says what is wrong.
type adaptError struct {
	name, src string
	line      int
	says      string
}

func assertAdaptErrors(t *testing.T, cases []adaptError) {
	t.Helper()
	for _, tc := range cases {
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
