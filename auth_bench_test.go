package longpoll_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/golang-jwt/jwt/v5"
)

// What checking a grant adds per poll: a poll answered at once (a message
// waits after its cursor) through a real Caddy over loopback, with the
// memory store, without auth and with a grant of each kind of key.
//
//	go test -run X -bench PollWithGrant -benchmem .
func BenchmarkPollWithGrant(b *testing.B) {
	dir := b.TempDir()
	secret := []byte("bench-secret-0123456789abcdef0123")
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	writePub := func(name string, pub any) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			b.Fatal(err)
		}
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
			b.Fatal(err)
		}
		return file
	}
	claims := jwt.MapClaims{"sub": "user-42", "channels": []string{"chat-lobby", "user-42-*"}, "exp": time.Now().Add(time.Hour).Unix()}
	for _, bc := range []struct {
		name, auth string
		method     jwt.SigningMethod
		key        any
	}{
		{name: "none"},
		{"HS256", fmt.Sprintf("key %s", secret), jwt.SigningMethodHS256, secret},
		{"EdDSA", "key_file " + writePub("ed.pem", edPub), jwt.SigningMethodEdDSA, edPriv},
		{"ES256", "key_file " + writePub("ec.pem", ecPriv.Public()), jwt.SigningMethodES256, ecPriv},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ports := freePorts(b, 2)
			auth := ""
			if bc.auth != "" {
				auth = "auth jwt {\n" + bc.auth + "\n}"
			}
			cfg := fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n\tauto_https off\n}\nhttp://127.0.0.1:%d {\n\tlongpoll /poll/* {\n%s\n}\n}\nhttp://127.0.0.1:%d {\n\tlongpoll_publish /publish/*\n}\n", ports[0], auth, ports[1])
			js, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := caddy.Load(js, true); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = caddy.Stop() })
			client := newClient(b)
			do := func(method, url string, hdr ...string) (int, string) {
				req, _ := http.NewRequestWithContext(context.Background(), method, url, nil)
				for i := 0; i+1 < len(hdr); i += 2 {
					req.Header.Set(hdr[i], hdr[i+1])
				}
				res, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				return res.StatusCode, string(body)
			}
			pub := fmt.Sprintf("http://127.0.0.1:%d/publish/user-42-inbox", ports[1])
			_, info := do("GET", pub)
			var ch struct{ Cursor string }
			if err := json.Unmarshal([]byte(info), &ch); err != nil || ch.Cursor == "" {
				b.Fatalf("channel info %q: %v", info, err)
			}
			if st, _ := do("POST", pub); st != 200 {
				b.Fatalf("publish: %d", st)
			}
			url := fmt.Sprintf("http://127.0.0.1:%d/poll/user-42-inbox?since=%s", ports[0], ch.Cursor)
			var hdr []string
			if bc.method != nil {
				tok := jwt.NewWithClaims(bc.method, claims)
				s, err := tok.SignedString(bc.key)
				if err != nil {
					b.Fatal(err)
				}
				hdr = []string{"Authorization", "Bearer " + s}
			}
			b.ReportAllocs()
			for b.Loop() {
				if st, body := do("GET", url, hdr...); st != 200 {
					b.Fatalf("poll: %d %s", st, body)
				}
			}
		})
	}
}
