// Package freeport finds free loopback addresses for the examples' tests.
package freeport

import (
	"net"
	"testing"
)

// Addrs returns n loopback addresses (127.0.0.1:port) free when it
// returns: they are listened on together, then let go.
func Addrs(t testing.TB, n int) []string {
	t.Helper()
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
