package budget_test

import (
	"context"
	"fmt"

	"github.com/rescache/rescache/budget"
)

// A Local budget bounds the connections of one process. An adapter takes it
// in its Options (sqladapter.Options.Budget, redisadapter.Options.Budget);
// this is what the adapter does with it around each connection.
func ExampleNewLocal() {
	b, err := budget.NewLocal(2)
	if err != nil {
		panic(err)
	}
	remove := b.AddReclaimer(budget.Reclaimer{Reclaim: func() int {
		return 0 // close idle connections here, and say how many
	}})
	defer remove()

	ctx := context.Background()
	if err := b.Acquire(ctx); err != nil { // before opening a connection
		panic(err)
	}
	fmt.Println("held:", b.Stats().Held, "contended:", b.Contended())
	b.Release() // after closing it
	fmt.Println("held:", b.Stats().Held)
	// Output:
	// held: 1 contended: false
	// held: 0
}
