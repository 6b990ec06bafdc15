package longpoll_test

import (
	"os"
	"os/exec"
	"testing"
)

// The JavaScript client's tests (client/longpoll.test.mjs) run under Node's
// test runner against the Caddy built from this checkout. Without node they
// skip, except in CI.
func TestJavaScriptClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node not found (apt-get install -y nodejs)")
		}
		t.Skip("node not found; install Node 20 or later (apt-get install -y nodejs)")
	}
	cmd := exec.Command(node, "--test", "client/")
	cmd.Env = append(os.Environ(), "LONGPOLL_CADDY="+buildCaddy(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test client/: %v\n%s", err, out)
	}
	t.Logf("node --test client/: passed")
}
