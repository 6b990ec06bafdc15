//go:build unix

package writenow

import (
	"net"

	"golang.org/x/sys/unix"
)

// Write writes b to conn if it is a plain TCP connection, without waiting,
// and returns how much it wrote: all of b, or ErrWouldBlock with the part
// written before the socket's send buffer filled. Any other connection
// (TLS: its records cannot be written in parts from here) gets 0 and
// ErrWouldBlock, for the caller to write the ordinary way. Deadlines set on
// conn do not apply.
func Write(conn net.Conn, b []byte) (int, error) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return 0, ErrWouldBlock
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, ErrWouldBlock
	}
	n := 0
	var werr error
	// raw.Write holds the connection's write lock while f runs; f
	// returns true: done, whatever happened, never wait.
	err = raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := unix.Write(int(fd), b[n:])
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				werr = ErrWouldBlock
			case err != nil:
				werr = err
			case m == 0:
				werr = ErrWouldBlock
			}
			if werr != nil {
				return true
			}
			n += m
		}
		return true
	})
	if err != nil {
		return n, err
	}
	return n, werr
}
