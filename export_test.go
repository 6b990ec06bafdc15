package longpoll

// WakeAll wakes every poll held by every store in the pool, as the Redis
// store does when its connection comes back, and returns how many.
func WakeAll() int {
	n := 0
	pool.Range(func(_, v any) bool {
		n += v.(*shared).poller.WakeAll()
		return true
	})
	return n
}
