//go:build !linux

package longpoll

import "net"

// closeWatcher is epoll-based on Linux; elsewhere each parked connection is
// watched by a goroutine of its own.
type closeWatcher struct{}

func newCloseWatcher() (*closeWatcher, error) { return &closeWatcher{}, nil }

func (*closeWatcher) add(net.Conn, *parkedPoll) (uint64, bool) { return 0, false }
func (*closeWatcher) remove(uint64)                            {}
func (*closeWatcher) Close()                                   {}
