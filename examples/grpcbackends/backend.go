package main

import (
	"context"
	"net"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Backend is an in-process gRPC server on a loopback port that serves the
// standard health service, standing in for one backend of a fleet (a
// shard, a replica, a region). It counts the calls it served and the
// connections it accepted.
type Backend struct {
	Addr   string
	srv    *grpc.Server
	health *health.Server
	calls  atomic.Int64
	conns  atomic.Int64
}

// StartBackend starts a backend on 127.0.0.1 and a free port.
func StartBackend() (*Backend, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &Backend{Addr: lis.Addr().String(), health: health.NewServer()}
	b.srv = grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		b.calls.Add(1)
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(b.srv, b.health)
	go b.srv.Serve(&countingListener{Listener: lis, n: &b.conns}) // returns at Stop
	return b, nil
}

// SetServing says whether the backend reports itself SERVING.
func (b *Backend) SetServing(ok bool) {
	s := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		s = healthpb.HealthCheckResponse_SERVING
	}
	b.health.SetServingStatus("", s)
}

// Calls returns the calls the backend served; Conns the connections it
// accepted.
func (b *Backend) Calls() int64 { return b.calls.Load() }

// Conns returns the connections the backend accepted.
func (b *Backend) Conns() int64 { return b.conns.Load() }

// Stop stops the backend and closes its connections.
func (b *Backend) Stop() { b.srv.Stop() }

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}
