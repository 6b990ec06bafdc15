package grip

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSignMakesPushpinsGripSig(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 500_000_000, time.UTC)
	tok, err := Sign([]byte("changeme"), now)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q has %d parts", tok, len(parts))
	}
	var head, claims map[string]any
	for i, into := range []*map[string]any{&head, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(head, map[string]any{"alg": "HS256", "typ": "JWT"}) {
		t.Errorf("header %v", head)
	}
	// Exactly iss and exp, exp in whole seconds one hour ahead.
	if !reflect.DeepEqual(claims, map[string]any{"iss": "pushpin", "exp": float64(now.Unix() + 3600)}) {
		t.Errorf("claims %v", claims)
	}
	if err := VerifyAt(tok, []byte("changeme"), now); err != nil {
		t.Errorf("VerifyAt: %v", err)
	}
	if _, err := Sign(nil, now); err == nil {
		t.Error("Sign with no key: no error")
	}
	tok2, _ := SignIssuer("edge", []byte("k"), now)
	b, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok2, ".")[1])
	if !strings.Contains(string(b), `"iss":"edge"`) {
		t.Errorf("SignIssuer claims %s", b)
	}
}

func TestVerify(t *testing.T) {
	key := []byte("changeme")
	now := time.Unix(1_800_000_000, 0)
	signed, _ := Sign(key, now)
	// Pushpin's core/jwttest.cpp tokens: HS256, claims {"foo":"bar"}, no exp.
	const pushpinToken = "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJmb28iOiAiYmFyIn0.oBia0Fph39FwQWv0TS7Disg4qa0aFa8qpMaYDrIXZqs"
	const pushpinBinaryKeyToken = "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJmb28iOiAiYmFyIn0.-eLxyGEITnd6IP4WvGJx9CmIOt--Qcs3LB6wblJ7KXI"
	none := "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + strings.Split(signed, ".")[1] + "."
	tests := []struct {
		name  string
		token string
		key   []byte
		at    time.Time
		want  string // "" for valid, else a part of the error
	}{
		{"our token, now", signed, key, now, ""},
		{"our token, a second before exp", signed, key, now.Add(time.Hour - time.Second), ""},
		{"our token, at exp (Pushpin: now >= exp is expired)", signed, key, now.Add(time.Hour), "expired"},
		{"our token, wrong key", signed, []byte("wrong"), now, "signature is invalid"},
		{"pushpin's test token: signature fine, no exp", pushpinToken, []byte("secret"), now, "exp claim is required"},
		{"pushpin's test token, binary key", pushpinBinaryKeyToken, []byte{0x01, 0x61, 0x80, 0xfe}, now, "exp claim is required"},
		{"pushpin's test token, wrong key", pushpinToken, []byte("wrong"), now, "signature is invalid"},
		{"alg none", none, key, now, "signing method none is invalid"},
		{"garbage", "a.b.c", key, now, "malformed"},
		{"empty key", signed, nil, now, "empty key"},
	}
	for _, tt := range tests {
		err := VerifyAt(tt.token, tt.key, tt.at)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v, want one with %q", tt.name, err, tt.want)
		}
	}
	if old, _ := Sign(key, time.Unix(1_000_000_000, 0)); Verify(old, key) == nil {
		t.Error("Verify of a token that expired in 2001: no error")
	}
	if tok, _ := Sign(key, time.Now()); Verify(tok, key) != nil {
		t.Error("Verify of a fresh token failed")
	}
}

func TestLastHeader(t *testing.T) {
	if got := LastHeader("chat-42", "1041"); got != "chat-42; last-id=1041" {
		t.Errorf("LastHeader = %q", got)
	}
	h := http.Header{}
	h.Add(LastHeaderName, LastHeader("a", "1"))
	h.Add(LastHeaderName, LastHeader("b", "2")+", c; last-id=\"3\"")
	h.Add(LastHeaderName, "d")
	want := map[string]string{"a": "1", "b": "2", "c": "3", "d": ""}
	if got := ParseLast(h); !reflect.DeepEqual(got, want) {
		t.Errorf("ParseLast = %v, want %v", got, want)
	}
	if got := ParseLast(http.Header{}); got != nil {
		t.Errorf("ParseLast of nothing = %v", got)
	}
}
