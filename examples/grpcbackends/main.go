// Command grpcbackends shows rescache holding one gRPC client connection
// per backend: it starts a few in-process gRPC servers on loopback, calls
// them through a cache of *grpc.ClientConn keyed by address (dialled on
// first use, leased per call, checked with the standard health service,
// closed when they leave), then takes one backend out of service and shows
// its connection go.
//
//	go run ./examples/grpcbackends
//	go run ./examples/grpcbackends -backends 5 -max-conns 3 -calls 200
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rescache/rescache"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "grpcbackends:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("grpcbackends", flag.ContinueOnError)
	fs.SetOutput(out)
	nBackends := fs.Int("backends", 3, "in-process gRPC backends to start")
	maxConns := fs.Int("max-conns", 0, "client connections open at once (0: one per backend)")
	calls := fs.Int("calls", 60, "calls to make, spread over the backends in turn")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *nBackends < 1 || *calls < 0 || *maxConns < 0 {
		return fmt.Errorf("-backends must be at least 1, -calls and -max-conns at least 0")
	}

	backends := make([]*Backend, *nBackends)
	for i := range backends {
		b, err := StartBackend()
		if err != nil {
			return err
		}
		defer b.Stop()
		backends[i] = b
	}
	closed := make(chan string, 64)
	conns, err := NewConns(ConnOptions{
		MaxConns:       *maxConns,
		HealthInterval: 100 * time.Millisecond,
		HealthTimeout:  time.Second,
		DialTimeout:    2 * time.Second,
		OnClose: func(addr string, reason rescache.EvictReason) {
			closed <- fmt.Sprintf("connection to %s left the cache: %v", addr, reason)
		},
	})
	if err != nil {
		return err
	}
	defer conns.Shutdown(context.Background())

	for i := range *calls {
		if err := call(ctx, conns, backends[i%len(backends)].Addr); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "%d calls over %d backends\n", *calls, len(backends))
	for _, b := range backends {
		fmt.Fprintf(out, "  %s: %d calls served, %d connections accepted\n", b.Addr, b.Calls(), b.Conns())
	}
	s := conns.Stats()
	fmt.Fprintf(out, "client connections dialled: %d, open: %d\n", s.Builds, s.Entries)

	// Take the first backend out of service: the next health round finds
	// it NOT_SERVING and closes its connection.
	backends[0].SetServing(false)
	deadline := time.After(5 * time.Second)
	for conns.Stats().EvictionsByReason[rescache.EvictUnhealthy] == 0 {
		select {
		case msg := <-closed:
			fmt.Fprintln(out, msg)
		case <-deadline:
			return fmt.Errorf("the unhealthy backend's connection was not closed within 5s")
		case <-time.After(20 * time.Millisecond):
		}
	}
	for len(closed) > 0 {
		fmt.Fprintln(out, <-closed)
	}
	if err := call(ctx, conns, backends[0].Addr); err != nil {
		fmt.Fprintf(out, "a new call to %s: %v\n", backends[0].Addr, err)
	}
	return nil
}

// call makes one call to the backend at addr through a lease on its
// connection: the connection stays open until the lease is released,
// whatever the cache decides meanwhile.
func call(ctx context.Context, conns *rescache.Cache[string, *grpc.ClientConn], addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	l, err := conns.Lease(ctx, addr)
	if err != nil {
		return err
	}
	defer l.Release()
	_, err = healthpb.NewHealthClient(l.Value()).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}
