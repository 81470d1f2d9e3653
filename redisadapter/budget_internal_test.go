package redisadapter

import (
	"context"
	"errors"
	rbudget "github.com/rescache/rescache/budget"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// pipeDialer dials net.Pipe connections whose far end answers every write
// with "+OK\r\n", and fails when fail is set. Its connections answer a
// second Close with net.ErrClosed, as TCP connections do (a pipe's says
// nil).
type pipeDialer struct {
	fail  bool
	dials int
}

// tcpLikeConn is a net.Conn whose second Close returns net.ErrClosed.
type tcpLikeConn struct {
	net.Conn
	closed bool
}

func (c *tcpLikeConn) Close() error {
	if c.closed {
		return net.ErrClosed
	}
	c.closed = true
	return c.Conn.Close()
}

func (d *pipeDialer) dial(context.Context, string, string) (net.Conn, error) {
	if d.fail {
		return nil, errors.New("pipe: refused")
	}
	d.dials++
	client, server := net.Pipe()
	go func() {
		defer server.Close()
		buf := make([]byte, 64)
		for {
			if _, err := server.Read(buf); err != nil {
				return
			}
			if _, err := server.Write([]byte("+OK\r\n")); err != nil {
				return
			}
		}
	}()
	return &tcpLikeConn{Conn: client}, nil
}

// roundTrip writes a command on c and reads its reply.
func roundTrip(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, 16)
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("read: %v", err)
	}
}

// Every connection dialled is given back exactly once: on a failed dial,
// on Close (twice), and on a reclaim followed by go-redis's own Close.
func TestBudgetAccounting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		local, err := rbudget.NewLocal(1)
		if err != nil {
			t.Fatal(err)
		}
		b := newBudget(local)
		da, db := &pipeDialer{}, &pipeDialer{fail: true}
		a, other := b.newClient(da.dial), b.newClient(db.dial)

		if _, err := other.dial(ctx, "tcp", "x"); err == nil {
			t.Fatal("dial through a failing dialer succeeded")
		}
		if n := b.b.Stats().Held; n != 0 {
			t.Fatalf("held = %d after a failed dial; want 0", n)
		}

		c, err := a.dial(ctx, "tcp", "x")
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c)
		c.Close()
		c.Close()
		if n := b.b.Stats().Held; n != 0 {
			t.Fatalf("held = %d after two Closes; want 0", n)
		}

		// A connection awaiting its reply is never reclaimed; once its
		// reply is read and it stays quiet, it is.
		c, err = a.dial(ctx, "tcp", "x")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		db.fail = false
		wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_, err = other.dial(wctx, "tcp", "x")
		cancel()
		if !errors.Is(err, ErrBudgetWait) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("dial with the budget held by a connection awaiting a reply = %v; want ErrBudgetWait and DeadlineExceeded", err)
		}
		buf := make([]byte, 16)
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
		time.Sleep(reclaimIdleAfter)
		oc, err := other.dial(ctx, "tcp", "x")
		if err != nil {
			t.Fatalf("dial with the budget held by an idle connection: %v", err)
		}
		if _, err := c.Write([]byte("PING\r\n")); err != io.EOF {
			t.Errorf("write on a reclaimed connection = %v; want io.EOF (go-redis retries)", err)
		}
		// go-redis drops the dead connection: no second release, and no
		// error for its pool's Close to report.
		if err := c.Close(); err != nil {
			t.Errorf("Close of a reclaimed connection = %v; want nil", err)
		}
		if n := b.b.Stats().Held; n != 1 {
			t.Errorf("held = %d with one connection open; want 1", n)
		}
		if st := b.stats(); st.Reclaimed != 1 {
			t.Errorf("Reclaimed = %d; want 1", st.Reclaimed)
		}
		oc.Close()
		if n := b.b.Stats().Held; n != 0 {
			t.Errorf("held = %d after closing everything; want 0", n)
		}
		// A client leaving the budget ends its waiting dials.
		hold, err := a.dial(ctx, "tcp", "x")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error)
		go func() {
			_, err := other.dial(ctx, "tcp", "x")
			done <- err
		}()
		synctest.Wait()
		b.forgetClient(other)
		if err := <-done; !errors.Is(err, ErrBudgetWait) {
			t.Errorf("waiting dial of a forgotten client = %v; want ErrBudgetWait", err)
		}
		hold.Close()
		synctest.Wait()
	})
}
