package longpoll

import (
	"runtime/debug"
	"sync"
	"time"
)

// memoryReleaser hands the memory of a burst of parked polls back to the
// operating system. Taking a poll in costs far more, for a moment (its
// request goroutine, buffers, request), than keeping it parked; after
// thousands arrive at once the Go runtime keeps that memory for reuse, and
// the process's RSS stays at the peak. Once parking has been quiet for a
// moment after at least releaseAfter parks, the releaser returns the idle
// memory (debug.FreeOSMemory: a GC and a scavenge). Owned by shared.
type memoryReleaser struct {
	mu     sync.Mutex
	parks  int
	timer  *time.Timer
	closed bool
}

const (
	releaseAfter = 1000                   // parks since the last release
	releaseQuiet = 500 * time.Millisecond // without a park
)

func (m *memoryReleaser) parked() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.parks++
	if m.parks < releaseAfter {
		return
	}
	if m.timer == nil {
		m.timer = time.AfterFunc(releaseQuiet, m.release)
	} else {
		m.timer.Reset(releaseQuiet)
	}
}

func (m *memoryReleaser) release() {
	m.mu.Lock()
	if m.closed || m.parks < releaseAfter {
		m.mu.Unlock()
		return
	}
	m.parks = 0
	m.mu.Unlock()
	debug.FreeOSMemory()
}

// Close stops the releaser.
func (m *memoryReleaser) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if m.timer != nil {
		m.timer.Stop()
	}
}
