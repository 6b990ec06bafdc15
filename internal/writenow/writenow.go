// Package writenow writes to a connection without waiting: one write
// system call, no deadline, no goroutine. A server that answers thousands
// of connections at once (a publish to parked polls) writes each answer
// this way and leaves only the clients that cannot take it at once to a
// goroutine with a deadline.
package writenow

import "errors"

// ErrWouldBlock means the rest of the bytes could not be written without
// waiting: the client's receive window is full, or the connection is not
// one that can be written this way.
var ErrWouldBlock = errors.New("writing would block")
