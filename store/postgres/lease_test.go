package postgres

import (
	"context"
	"testing"
	"time"
)

// terminate ends, from the server's side, the lease connection of replica,
// as if the replica's process or host died.
func terminate(t *testing.T, db *DB, replica string) {
	t.Helper()
	var n int
	err := db.pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1`, "kontextbot-leases/"+replica).Scan(&n)
	if err != nil || n != 1 {
		t.Fatalf("terminate %s: %d connections, %v", replica, n, err)
	}
}

func TestLeases(t *testing.T) {
	db := openTest(t, Options{})
	ctx := context.Background()
	a := db.Leases(LeaseOptions{Replica: "a", Check: 100 * time.Millisecond})
	b := db.Leases(LeaseOptions{Replica: "b", Check: 100 * time.Millisecond})
	defer a.Close()
	defer b.Close()

	lostA, releaseA, ok, err := a.TryAcquire(ctx, "gateway/0")
	if err != nil || !ok {
		t.Fatalf("a: first acquire: ok %v, err %v", ok, err)
	}
	t.Run("held elsewhere is refused", func(t *testing.T) {
		if _, _, ok, err := b.TryAcquire(ctx, "gateway/0"); err != nil || ok {
			t.Errorf("b acquired a's lease: ok %v, err %v", ok, err)
		}
		if _, _, ok, err := a.TryAcquire(ctx, "gateway/0"); err != nil || ok {
			t.Errorf("a acquired its own lease twice: ok %v, err %v", ok, err)
		}
	})
	t.Run("other names are free", func(t *testing.T) {
		_, rel, ok, err := b.TryAcquire(ctx, "gateway/1")
		if err != nil || !ok {
			t.Fatalf("b: gateway/1: ok %v, err %v", ok, err)
		}
		rel()
	})
	t.Run("peers counts both replicas", func(t *testing.T) {
		if n, err := a.Peers(ctx); err != nil || n != 2 {
			t.Errorf("Peers = %d, %v; want 2", n, err)
		}
	})
	t.Run("release hands it over", func(t *testing.T) {
		releaseA()
		releaseA() // twice is harmless
		select {
		case <-lostA:
			t.Error("a released lease reported lost")
		default:
		}
		_, rel, ok, err := b.TryAcquire(ctx, "gateway/0")
		if err != nil || !ok {
			t.Fatalf("b after a's release: ok %v, err %v", ok, err)
		}
		rel()
	})
	t.Run("a dead holder loses it and another takes it", func(t *testing.T) {
		lost, _, ok, err := a.TryAcquire(ctx, "gateway/0")
		if err != nil || !ok {
			t.Fatalf("a: acquire: ok %v, err %v", ok, err)
		}
		terminate(t, db, "a")
		select {
		case <-lost:
		case <-time.After(10 * time.Second):
			t.Fatal("a's lease was not reported lost after its connection died")
		}
		_, rel, ok, err := b.TryAcquire(ctx, "gateway/0")
		if err != nil || !ok {
			t.Fatalf("b after a died: ok %v, err %v", ok, err)
		}
		defer rel()
		if n, err := b.Peers(ctx); err != nil || n != 1 {
			t.Errorf("Peers after a died = %d, %v; want 1", n, err)
		}
		// a reconnects on its next try and sees the lease held.
		if _, _, ok, err := a.TryAcquire(ctx, "gateway/0"); err != nil || ok {
			t.Errorf("a after reconnecting: ok %v, err %v; want refused", ok, err)
		}
	})
	t.Run("close releases", func(t *testing.T) {
		lost, _, ok, err := b.TryAcquire(ctx, "gateway/2")
		if err != nil || !ok {
			t.Fatalf("b: gateway/2: ok %v, err %v", ok, err)
		}
		b.Close()
		<-lost
		if _, _, _, err := b.TryAcquire(ctx, "gateway/2"); err == nil {
			t.Error("TryAcquire after Close succeeded")
		}
		_, rel, ok, err := a.TryAcquire(ctx, "gateway/2")
		if err != nil || !ok {
			t.Fatalf("a after b closed: ok %v, err %v", ok, err)
		}
		rel()
	})
}

// TestLeasesSchemas checks that a lease of one schema never blocks the
// same name in another.
func TestLeasesSchemas(t *testing.T) {
	ctx := context.Background()
	one := openTest(t, Options{}).Leases(LeaseOptions{})
	two := openTest(t, Options{}).Leases(LeaseOptions{})
	defer one.Close()
	defer two.Close()
	for i, l := range []*Leases{one, two} {
		if _, _, ok, err := l.TryAcquire(ctx, "gateway/0"); err != nil || !ok {
			t.Errorf("schema %d: ok %v, err %v", i, ok, err)
		}
		if n, err := l.Peers(ctx); err != nil || n != 1 {
			t.Errorf("schema %d: Peers = %d, %v; want 1", i, n, err)
		}
	}
}
