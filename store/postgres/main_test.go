package postgres

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine (a queue listener, a
// worker, a pool's) outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
