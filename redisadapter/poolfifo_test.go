package redisadapter_test

import (
	"context"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rescache/rescache/redisadapter"
)

// countingConns is a Dialer whose connections count the writes made on
// each, in the order they were dialled.
type countingConns struct {
	mu     sync.Mutex
	writes []*atomic.Int64
}

func (d *countingConns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	n := new(atomic.Int64)
	d.mu.Lock()
	d.writes = append(d.writes, n)
	d.mu.Unlock()
	return &countingConn{Conn: c, writes: n}, nil
}

func (d *countingConns) counts() []int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]int64, len(d.writes))
	for i, n := range d.writes {
		out[i] = n.Load()
	}
	return out
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// TestPoolFIFO: the PoolFIFO of a tenant's options reaches its client, with
// and without a budget: with it, four idle connections serve eight commands
// two each, oldest-returned first; without it, the connection returned
// last serves them all.
func TestPoolFIFO(t *testing.T) {
	addr := os.Getenv(envAddr)
	if addr == "" {
		addr = miniredis.RunT(t).Addr()
	}
	ctx := context.Background()
	for _, budget := range []int{0, 16} {
		for _, fifo := range []bool{true, false} {
			dialer := &countingConns{}
			c, err := redisadapter.New(redisadapter.Options[string]{
				Client: func(context.Context, string) (*redis.Options, error) {
					return &redis.Options{Addr: addr, PoolFIFO: fifo, PoolSize: 4, Dialer: dialer.dial}, nil
				},
				MaxTotalConns: budget,
			})
			if err != nil {
				t.Fatal(err)
			}
			rdb, err := c.Get(ctx, "acme")
			if err != nil {
				t.Fatal(err)
			}
			if rdb.Options().PoolFIFO != fifo {
				t.Errorf("budget %d: client's PoolFIFO = %v; want %v", budget, rdb.Options().PoolFIFO, fifo)
			}
			// Four connections at once (the build's PING opened the first),
			// put back in the order dialled.
			conns := make([]*redis.Conn, 4)
			for i := range conns {
				conns[i] = rdb.Conn()
				if err := conns[i].Ping(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			for _, cn := range conns {
				cn.Close()
			}
			before := dialer.counts()
			for range 8 {
				if err := rdb.Ping(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			after := dialer.counts()
			if len(after) != 4 {
				t.Fatalf("budget %d, fifo %v: %d connections dialled; want 4", budget, fifo, len(after))
			}
			used := make([]int64, 4)
			for i := range used {
				used[i] = after[i] - before[i]
			}
			want := []int64{2, 2, 2, 2}
			if !fifo {
				want = []int64{0, 0, 0, 8}
			}
			if !slices.Equal(used, want) {
				t.Errorf("budget %d, PoolFIFO %v: commands per connection %v; want %v", budget, fifo, used, want)
			}
			if err := c.Close(); err != nil {
				t.Error(err)
			}
		}
	}
}
