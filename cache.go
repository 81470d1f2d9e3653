package rescache

import (
	"context"
	"errors"
)

// ErrClosed is returned by Get and Acquire after Close.
var ErrClosed = errors.New("rescache: cache closed")

// Cache is a placeholder while the implementation lands.
type Cache[K comparable, V any] struct{}

func New[K comparable, V any](build func(ctx context.Context, key K) (V, error), opts *Options[K, V]) (*Cache[K, V], error) {
	panic("not implemented")
}
func (c *Cache[K, V]) Get(ctx context.Context, key K) (V, error) { panic("x") }
func (c *Cache[K, V]) Acquire(ctx context.Context, key K) (v V, release func(), err error) {
	panic("x")
}
func (c *Cache[K, V]) Peek(key K) (V, bool)              { panic("x") }
func (c *Cache[K, V]) Invalidate(key K) bool             { panic("x") }
func (c *Cache[K, V]) Len() int                          { panic("x") }
func (c *Cache[K, V]) Stats() Stats                      { panic("x") }
func (c *Cache[K, V]) Close() error                      { panic("x") }
func (c *Cache[K, V]) Shutdown(ctx context.Context) error { panic("x") }
