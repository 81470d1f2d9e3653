package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rescache/rescache"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// ConnOptions configures NewConns.
type ConnOptions struct {
	// MaxConns bounds the client connections open at once: one per backend
	// address, the least recently used closed when a new backend needs
	// room. 0 means unbounded.
	MaxConns int
	// IdleTimeout closes the connection of a backend not called for this
	// long. 0 means never.
	IdleTimeout time.Duration
	// HealthInterval is how often idle connections are checked with the
	// standard gRPC health service (grpc.health.v1.Health/Check); a backend
	// that answers anything but SERVING, or does not answer within
	// HealthTimeout, loses its connection (the next call dials again).
	HealthInterval, HealthTimeout time.Duration
	// DialTimeout bounds the first health check of a new connection: a
	// connection is cached only once its backend has answered SERVING.
	DialTimeout time.Duration
	// DialOptions are passed to grpc.NewClient, after the insecure
	// transport credentials the loopback example uses.
	DialOptions []grpc.DialOption
	// OnClose, if set, is told about every connection closed, with the
	// reason it left the cache.
	OnClose func(addr string, reason rescache.EvictReason)
}

// ErrNotServing is the error of a build or a health check whose backend
// answered, but not SERVING.
var ErrNotServing = errors.New("backend is not serving")

// NewConns returns a cache of one *grpc.ClientConn per backend address:
// dialled on the first call for that address (grpc.NewClient, then a
// health check, so an address that does not answer is never cached),
// shared by every caller, checked with the health service while idle,
// and closed when it leaves the cache (capacity, idle timeout, failed
// health check, Invalidate or Close).
//
// Call through a lease, so that a connection is never closed under a call
// in flight:
//
//	l, err := conns.Lease(ctx, addr)
//	if err != nil { ... }
//	defer l.Release()
//	reply, err := pb.NewYourServiceClient(l.Value()).YourCall(ctx, req)
func NewConns(o ConnOptions) (*rescache.Cache[string, *grpc.ClientConn], error) {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	dialOpts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, o.DialOptions...)
	var opts rescache.Options[string, *grpc.ClientConn]
	opts.MaxEntries = o.MaxConns
	opts.IdleTimeout = o.IdleTimeout
	opts.HealthCheckInterval = o.HealthInterval
	opts.HealthCheckTimeout = o.HealthTimeout
	if o.HealthInterval > 0 {
		opts.HealthCheck = func(ctx context.Context, addr string, cc *grpc.ClientConn) error {
			return checkServing(ctx, cc)
		}
	}
	opts.Close = func(addr string, cc *grpc.ClientConn) error { return cc.Close() }
	if o.OnClose != nil {
		opts.OnEvict = func(addr string, _ *grpc.ClientConn, reason rescache.EvictReason) { o.OnClose(addr, reason) }
	}
	return rescache.New(func(ctx context.Context, addr string) (*grpc.ClientConn, error) {
		cc, err := grpc.NewClient(addr, dialOpts...)
		if err != nil {
			return nil, fmt.Errorf("backend %s: %w", addr, err)
		}
		ctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
		defer cancel()
		if err := checkServing(ctx, cc); err != nil {
			cc.Close()
			return nil, fmt.Errorf("backend %s: %w", addr, err)
		}
		return cc, nil
	}, &opts)
}

// checkServing asks the backend's health service about the server as a
// whole (the empty service name).
func checkServing(ctx context.Context, cc *grpc.ClientConn) error {
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%w: %v", ErrNotServing, s)
	}
	return nil
}
