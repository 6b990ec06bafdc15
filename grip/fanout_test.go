package grip

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Compatibility with @fanoutio/grip, a GRIP client we did not write. Its
// output was recorded once into testdata/fanoutio-grip.golden.json by
// testdata/fanoutio-grip.mjs; TestFanoutGripGolden checks our package
// against the recording, with no Node and no network. To record again:
//
//	(cd /tmp && npm install @fanoutio/grip)
//	go test ./grip -run TestFanoutGripRecord -grip.fanout=/tmp/node_modules
var fanoutModules = flag.String("grip.fanout", "",
	"node_modules holding @fanoutio/grip: rerun testdata/fanoutio-grip.mjs and rewrite its golden file")

const fanoutGolden = "testdata/fanoutio-grip.golden.json"

// The Grip-Sigs we hand to @fanoutio/grip's validateSig: made with Sign at
// fixed times, so the replay can make the same bytes again.
type fanoutSig struct {
	Name      string `json:"name"`
	SignKey   string `json:"signKey"`
	SignedAt  int64  `json:"signedAt"`
	VerifyKey string `json:"verifyKey"`
	Token     string `json:"token"`
	Valid     bool   `json:"valid"`
}

var fanoutSigs = []fanoutSig{
	{Name: "ours, valid until 2099", SignKey: "changeme", SignedAt: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), VerifyKey: "changeme", Valid: true},
	{Name: "ours, other key", SignKey: "changeme", SignedAt: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), VerifyKey: "other"},
	{Name: "ours, expired in 2001", SignKey: "changeme", SignedAt: 1_000_000_000, VerifyKey: "changeme"},
}

const fanoutPublishKey = "app-secret"

type fanoutRecording struct {
	Package    string `json:"package"`
	RecordedAt int64  `json:"recordedAt"`
	Publishes  []struct {
		Method  string            `json:"method"`
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
	} `json:"publishes"`
	Instructs []struct {
		Name    string            `json:"name"`
		Headers map[string]string `json:"headers"`
	} `json:"instructs"`
	Sigs []fanoutSig `json:"sigs"`
}

func signFanout(t *testing.T, s fanoutSig) string {
	t.Helper()
	tok, err := Sign([]byte(s.SignKey), time.Unix(s.SignedAt, 0))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestFanoutGripRecord(t *testing.T) {
	if *fanoutModules == "" {
		t.Skip("records only with -grip.fanout=<node_modules>")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("-grip.fanout given but no node: %v", err)
	}
	in := struct {
		PublishKey string      `json:"publishKey"`
		Sigs       []fanoutSig `json:"sigs"`
	}{PublishKey: fanoutPublishKey}
	for _, s := range fanoutSigs {
		s.Token, s.Valid = signFanout(t, s), false
		in.Sigs = append(in.Sigs, s)
	}
	stdin, _ := json.Marshal(in)
	cmd := exec.Command(node, "testdata/fanoutio-grip.mjs", *fanoutModules)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	if err := json.Unmarshal(out, new(fanoutRecording)); err != nil {
		t.Fatalf("node's output: %v\n%s", err, out)
	}
	if err := os.WriteFile(fanoutGolden, out, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("rewrote %s", fanoutGolden)
}

func TestFanoutGripGolden(t *testing.T) {
	b, err := os.ReadFile(fanoutGolden)
	if err != nil {
		t.Fatal(err)
	}
	var rec fanoutRecording
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	t.Logf("recorded from %s", rec.Package)

	t.Run("its Grip-Sig verdicts hold for the tokens we make", func(t *testing.T) {
		if len(rec.Sigs) != len(fanoutSigs) {
			t.Fatalf("%d sigs recorded, want %d", len(rec.Sigs), len(fanoutSigs))
		}
		for i, s := range rec.Sigs {
			want := fanoutSigs[i]
			if tok := signFanout(t, want); s.Token != tok {
				t.Errorf("%s: Sign now makes %q, %s validated %q", want.Name, tok, rec.Package, s.Token)
			}
			if s.Valid != want.Valid {
				t.Errorf("%s: %s says valid=%v, want %v", want.Name, rec.Package, s.Valid, want.Valid)
			}
			ours := Verify(s.Token, []byte(s.VerifyKey)) == nil
			if ours != s.Valid {
				t.Errorf("%s: our Verify says %v, %s says %v", want.Name, ours, rec.Package, s.Valid)
			}
		}
	})

	t.Run("we verify the JWT its publisher signs", func(t *testing.T) {
		auth := rec.Publishes[0].Headers["Authorization"]
		tok, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok {
			t.Fatalf("Authorization %q", auth)
		}
		at := time.Unix(rec.RecordedAt, 0)
		if err := VerifyAt(tok, []byte(fanoutPublishKey), at); err != nil {
			t.Errorf("VerifyAt(its token): %v", err)
		}
		if err := VerifyAt(tok, []byte("wrong"), at); err == nil {
			t.Error("VerifyAt(its token, wrong key): no error")
		}
	})

	t.Run("we parse the publishes it builds", func(t *testing.T) {
		resp := func(code int, reason string, h http.Header, body []byte) *HTTPResponse {
			return &HTTPResponse{Code: code, Reason: reason, Header: h, Body: body}
		}
		want := [][]Item{
			{{Channel: "chat-42", ID: "1042", PrevID: "1041", Size: -1, Formats: []string{"http-response"},
				HTTPResponse: resp(404, "Gone Fishing", hdr("Content-Type", "application/json", "X-Id", "1042"), []byte(`{"messages":[1042]}`))}},
			{{Channel: "chat-42", Size: -1, Formats: []string{"http-response"},
				HTTPResponse: resp(200, "OK", http.Header{}, []byte("just a body"))}},
			{{Channel: "bin", ID: "b1", Size: -1, Formats: []string{"http-response"},
				HTTPResponse: resp(200, "OK", http.Header{}, []byte{0, 1, 2, 255})}},
			{{Channel: "mixed", ID: "2", PrevID: "1", Size: -1, Formats: []string{"http-response", "http-stream"},
				HTTPResponse: resp(200, "OK", http.Header{}, []byte("r"))}},
			{{Channel: "stream-only", Size: -1, Formats: []string{"http-stream"}}},
		}
		if len(rec.Publishes) != len(want) {
			t.Fatalf("%d publishes recorded, want %d", len(rec.Publishes), len(want))
		}
		for i, p := range rec.Publishes {
			// It posts to <control_uri>/publish/ with a trailing slash,
			// which Pushpin takes as /publish.
			if p.Method != "POST" || !strings.HasSuffix(p.URL, "/publish/") || p.Headers["Content-Type"] != "application/json" {
				t.Errorf("publish %d: %s %s %v", i, p.Method, p.URL, p.Headers)
			}
			items, err := ParsePublish([]byte(p.Body))
			if err != nil {
				t.Errorf("publish %d: %v\n%s", i, err, p.Body)
				continue
			}
			if !reflect.DeepEqual(items, want[i]) {
				t.Errorf("publish %d: got %+v, want %+v", i, items, want[i])
			}
		}
	})

	t.Run("we parse the hold headers it writes", func(t *testing.T) {
		want := []Instruct{
			{Hold: ResponseHold, Channels: []Channel{{Name: "chat-42", PrevID: "1041"}, {Name: "chat-43"}},
				Timeout: 30 * time.Second, Response: Response{200, "OK", hdr("Content-Type", "application/json"), nil}},
			{Hold: ResponseHold, Channels: []Channel{{Name: "c"}}, Timeout: DefaultTimeout,
				Meta: map[string]string{"user": `a "b"`}, Response: Response{304, "Not Modified", http.Header{}, nil}},
			{Hold: StreamHold, Channels: []Channel{{Name: "s"}}, Timeout: DefaultTimeout,
				KeepAlive: &KeepAlive{KeepAliveIdle, []byte("ping\n"), 20 * time.Second}, Response: Response{200, "OK", http.Header{}, nil}},
		}
		if len(rec.Instructs) != len(want) {
			t.Fatalf("%d instructs recorded, want %d", len(rec.Instructs), len(want))
		}
		for i, r := range rec.Instructs {
			h := http.Header{}
			for k, v := range r.Headers {
				h.Set(k, v)
			}
			in, err := ParseResponse(200, h, nil)
			if err != nil {
				t.Errorf("%s: %v", r.Name, err)
				continue
			}
			if !reflect.DeepEqual(*in, want[i]) {
				t.Errorf("%s: got %+v, want %+v", r.Name, *in, want[i])
			}
		}
	})
}
