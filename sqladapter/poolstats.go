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
//
// For a pool under [LeastRecentlyUsed], whose idle connections database/sql
// does not see, PoolStats reports them as database/sql would:
// OpenConnections and Idle count the idle connections of the pick's queue,
// and MaxIdleClosed, MaxIdleTimeClosed and MaxLifetimeClosed count the
// connections the pick closed for each limit (db.Stats() of such a pool
// itself reports Idle 0, OpenConnections without the idle ones, every
// connection put back in MaxIdleClosed, and 0 in the two others).
func PoolStats[K comparable](c *rescache.Cache[K, *sql.DB]) map[K]sql.DBStats {
	out := make(map[K]sql.DBStats, c.Len())
	c.Range(func(key K, db *sql.DB) bool {
		out[key] = dbStats(db)
		return true
	})
	return out
}

// dbStats returns db.Stats(), corrected as PoolStats says for a pool under
// LeastRecentlyUsed.
func dbStats(db *sql.DB) sql.DBStats {
	st := db.Stats()
	v, ok := picks.Load(db)
	if !ok {
		return st
	}
	p := v.(*pickPool)
	idle := p.idleCount()
	st.Idle = idle
	st.OpenConnections += idle
	st.MaxIdleClosed = p.maxIdleClosed.Load()
	st.MaxIdleTimeClosed = p.maxIdleTimeClosed.Load()
	st.MaxLifetimeClosed = p.maxLifetimeClosed.Load()
	return st
}
