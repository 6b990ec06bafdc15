package longpoll

import (
	"crypto/tls"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// closeWatcher notices when the clients of parked polls go away, with one
// epoll set and one goroutine for all of them, instead of a goroutine per
// connection. It is owned by the shared store state and closed with it.
type closeWatcher struct {
	epfd, evfd int
	done       chan struct{}

	mu     sync.Mutex
	polls  map[uint64]*parkedPoll // token → poll
	next   uint64
	closed bool
}

func newCloseWatcher() (*closeWatcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	// Token 0 is the eventfd that Close writes to.
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, err
	}
	cw := &closeWatcher{epfd: epfd, evfd: evfd, done: make(chan struct{}), polls: map[uint64]*parkedPoll{}}
	go cw.loop()
	return cw, nil
}

// add watches conn for pk; it reports false if conn has no file descriptor
// (then the caller watches it another way).
func (cw *closeWatcher) add(conn net.Conn, pk *parkedPoll) (uint64, bool) {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if cw.closed {
		return 0, false
	}
	cw.next++
	token := cw.next
	var ctlErr error
	err = raw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
		ctlErr = unix.EpollCtl(cw.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err != nil || ctlErr != nil {
		return 0, false
	}
	cw.polls[token] = pk
	return token, true
}

// remove stops watching; call it before closing the connection (closing
// the descriptor also takes it out of the epoll set).
func (cw *closeWatcher) remove(token uint64) {
	cw.mu.Lock()
	delete(cw.polls, token)
	cw.mu.Unlock()
}

func (cw *closeWatcher) loop() {
	defer close(cw.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(cw.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if token == 0 {
				return // Close
			}
			cw.mu.Lock()
			pk := cw.polls[token]
			delete(cw.polls, token)
			cw.mu.Unlock()
			if pk != nil {
				go pk.finish(nil) // the client went away (or sent something): close
			}
		}
	}
}

// Close stops the watcher. Polls still parked are answered by their
// poller, which is closed first.
func (cw *closeWatcher) Close() {
	cw.mu.Lock()
	if cw.closed {
		cw.mu.Unlock()
		return
	}
	cw.closed = true
	cw.mu.Unlock()
	unix.Write(cw.evfd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	<-cw.done
	unix.Close(cw.epfd)
	unix.Close(cw.evfd)
}
