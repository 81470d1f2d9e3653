package sqladapter

import (
	"database/sql"

	"github.com/rescache/rescache"
)

// PoolStats returns the [sql.DBStats] of every tenant pool that c holds now,
// by tenant: open connections, in use, idle, waits, and the connections
// closed for each limit. It takes no lease and does not count as a use of
// any tenant, so it may be called as often as a metrics scrape wants. A
// pool evicted while PoolStats runs may still appear, with the figures of a
// closed pool.
func PoolStats[K comparable](c *rescache.Cache[K, *sql.DB]) map[K]sql.DBStats {
	out := make(map[K]sql.DBStats, c.Len())
	c.Range(func(key K, db *sql.DB) bool {
		out[key] = db.Stats()
		return true
	})
	return out
}
