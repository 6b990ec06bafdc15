//go:build !unix

package writenow

import "net"

// Write writes nothing on this system: the caller writes the ordinary way.
func Write(net.Conn, []byte) (int, error) { return 0, ErrWouldBlock }
