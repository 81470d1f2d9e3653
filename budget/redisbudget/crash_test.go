package redisbudget

// crash stops the budget's goroutines without leaving the fleet, as a
// process killed with SIGKILL would: Redis keeps counting its places until
// its lease expires.
func (b *Budget) crash() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	b.done.Wait()
}
