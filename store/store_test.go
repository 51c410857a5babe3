package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// t0 is the fixed time the benchmarks stamp their conversations with.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func TestOpenCreatesFolderAndFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "kontext.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	for _, tc := range []struct {
		name string
		path string
		want os.FileMode
	}{
		{"folder", dir, 0o750},
		{"file", path, 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fi, err := os.Stat(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != tc.want&^umask(t) {
				t.Errorf("mode of %s: got %v, want %v", tc.path, got, tc.want)
			}
		})
	}
	if got, want := db.history, DefaultHistory; got != want {
		t.Errorf("default history: got %d, want %d", got, want)
	}
	for _, b := range allBuckets {
		_ = db.countKeys(t, b) // fails the test if the bucket is missing
	}
}

// umask reads the process umask through a throwaway folder.
func umask(t *testing.T) os.FileMode {
	p := filepath.Join(t.TempDir(), "probe")
	if err := os.Mkdir(p, 0o777); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return 0o777 &^ fi.Mode().Perm()
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kontext.db")
	first, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	second, err := Open(path, Options{Timeout: 100 * time.Millisecond})
	elapsed := time.Since(start)
	if err == nil {
		second.Close()
		t.Fatal("second Open of a held file: got nil error, want ErrLocked")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("second Open: got %v, want an error wrapping ErrLocked", err)
	}
	for _, want := range []string{path, "in use by another kontextbot process", "only one may run per file", "KONTEXT_DB"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error text %q: want it to contain %q", err, want)
		}
	}
	if elapsed > 2*time.Second {
		t.Errorf("second Open took %v, want it to fail fast", elapsed)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	third, err := Open(path, Options{Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	third.Close()
}

func TestOpenSchema(t *testing.T) {
	tests := []struct {
		name  string
		setup func(tx *bbolt.Tx) error
		want  []string // in the error text; nil means Open succeeds
	}{
		{
			name:  "current version",
			setup: func(tx *bbolt.Tx) error { return putSchema(tx, strconv.Itoa(SchemaVersion)) },
		},
		{
			name:  "newer version",
			setup: func(tx *bbolt.Tx) error { return putSchema(tx, strconv.Itoa(SchemaVersion+1)) },
			want:  []string{fmt.Sprint("schema version ", SchemaVersion+1), fmt.Sprint("uses version ", SchemaVersion), "newer kontextbot"},
		},
		{
			name:  "unreadable version",
			setup: func(tx *bbolt.Tx) error { return putSchema(tx, "x") },
			want:  []string{`"x"`, fmt.Sprint("version ", SchemaVersion)},
		},
		{
			name: "foreign file without a version",
			setup: func(tx *bbolt.Tx) error {
				_, err := tx.CreateBucket([]byte("somebody-else"))
				return err
			},
			want: []string{"schema version 0", fmt.Sprint("uses version ", SchemaVersion), "KONTEXT_DB"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kontext.db")
			b, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Update(tc.setup); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := Open(path, Options{})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Open: got %v, want success", err)
				}
				db.Close()
				return
			}
			if err == nil {
				db.Close()
				t.Fatal("Open: got nil error, want ErrSchema")
			}
			if !errors.Is(err, ErrSchema) {
				t.Errorf("Open: got %v, want an error wrapping ErrSchema", err)
			}
			for _, w := range append(tc.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error text %q: want it to contain %q", err, w)
				}
			}
			// The refused file must be left alone and unlocked.
			b, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 100 * time.Millisecond})
			if err != nil {
				t.Fatalf("file after refusal: %v", err)
			}
			b.Close()
		})
	}
}

func putSchema(tx *bbolt.Tx, v string) error {
	m, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	return m.Put(keySchema, []byte(v))
}
