package connwatch

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// epollWatcher watches every connection with one epoll set and one
// goroutine. A connection without a file descriptor goes to the fallback.
type epollWatcher struct {
	epfd, evfd int
	done       chan struct{} // closed when loop returns
	fallback   *readWatcher

	registry // its mu also guards closed and fds
	closed   bool
	fds      map[Token]int // the descriptor of each token in the epoll set
}

// Tokens of the fallback have this bit set, so Forget knows where to look.
const fallbackBit = Token(1) << 63

func newWatcher() (Watcher, error) {
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
	w := &epollWatcher{epfd: epfd, evfd: evfd, done: make(chan struct{}),
		fallback: NewFallback().(*readWatcher), registry: newRegistry(), fds: map[Token]int{}}
	go w.loop()
	return w, nil
}

func (w *epollWatcher) Watch(conn net.Conn, gone func()) Token {
	if t, ok := w.watch(conn, gone); ok {
		return t
	}
	return w.fallback.Watch(conn, gone) | fallbackBit
}

func (w *epollWatcher) watch(conn net.Conn, gone func()) (Token, bool) {
	sc, ok := netConn(conn).(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, false
	}
	w.next++
	t := w.next
	var ctlErr error
	fd := -1
	err = raw.Control(func(d uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
			Fd: int32(uint32(t)), Pad: int32(uint32(t >> 32))}
		fd = int(d)
		ctlErr = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
	})
	if err != nil || ctlErr != nil {
		return 0, false
	}
	w.gone[t] = gone
	w.fds[t] = fd
	return t, true
}

// Forget drops t; closing the descriptor takes it out of the epoll set.
func (w *epollWatcher) Forget(t Token) {
	if t&fallbackBit != 0 {
		w.fallback.Forget(t &^ fallbackBit)
		return
	}
	w.mu.Lock()
	delete(w.gone, t)
	delete(w.fds, t)
	w.mu.Unlock()
}

// Release takes the descriptor out of the epoll set (under mu, so that
// Close has not closed the set), unless gone was called.
func (w *epollWatcher) Release(t Token) bool {
	if t&fallbackBit != 0 {
		return w.fallback.Release(t &^ fallbackBit)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	fd, ok := w.fds[t]
	_, watched := w.gone[t]
	delete(w.gone, t)
	delete(w.fds, t)
	if !ok || !watched || w.closed {
		return false
	}
	return unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, nil) == nil
}

func (w *epollWatcher) loop() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			t := Token(uint32(ev.Fd)) | Token(uint32(ev.Pad))<<32
			if t == 0 {
				return // Close
			}
			w.fire(t)
		}
	}
}

func (w *epollWatcher) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	unix.Write(w.evfd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	<-w.done
	unix.Close(w.epfd)
	unix.Close(w.evfd)
	w.fallback.Close()
}
