package sqladapter_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests: every pool the
// tests opened is closed by then, so no goroutine of database/sql (opener,
// cleaner), of a cache or of the connection budget may be left.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
