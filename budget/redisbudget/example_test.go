package redisbudget_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rescache/rescache/budget/redisbudget"
)

// Two processes of a fleet (two budgets here) share one budget of 2
// places through Redis: what one holds, the other cannot take. In a real
// deployment each process makes its own Budget with the same Name and Max
// and passes it as sqladapter.Options.Budget (or redisadapter's).
func ExampleNew() {
	mr, _ := miniredis.Run() // a stand-in for the fleet's Redis
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	a, _ := redisbudget.New(redisbudget.Options{Client: rdb, Name: "orders-db", Max: 2, Instance: "a"})
	defer a.Close()
	b, _ := redisbudget.New(redisbudget.Options{Client: rdb, Name: "orders-db", Max: 2, Instance: "b"})
	defer b.Close()

	ctx := context.Background()
	a.Acquire(ctx) // the first places wait until the new fleet's store is settled (2s)
	a.Acquire(ctx)
	fmt.Println("a holds", a.Stats().Held, "of", a.Stats().Max)

	full, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	fmt.Println("b while a holds both:", b.Acquire(full))

	a.Release()
	fmt.Println("b after a released one:", b.Acquire(ctx))
	b.Release()
	a.Release()
	// Output:
	// a holds 2 of 2
	// b while a holds both: context deadline exceeded
	// b after a released one: <nil>
}
