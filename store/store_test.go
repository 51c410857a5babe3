package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"kontextbot/bot"
)

var (
	t0   = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	keyA = bot.ConvKey{Platform: "discord", Workspace: "guildA", Channel: "chan1", Thread: "th1"}
	keyB = bot.ConvKey{Platform: "discord", Workspace: "guildB", Channel: "chan1", Thread: "th1"}
)

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

func TestOpenReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kontext.db")
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.AddTurn(ctx, keyA, turn("t1"), img(1), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer db.Close()
	c, err := db.Conversation(ctx, keyA)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Head, "t1"; got != want {
		t.Errorf("head after reopen: got %q, want %q", got, want)
	}
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

func TestCancelledContext(t *testing.T) {
	db := openTest(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := []struct {
		name string
		call func() error
	}{
		{"Conversation", func() error { _, err := db.Conversation(ctx, keyA); return err }},
		{"Image", func() error { _, err := db.Image(ctx, shaOf(img(1))); return err }},
		{"AddTurn", func() error { _, err := db.AddTurn(ctx, keyA, turn("t1"), img(1), nil, nil); return err }},
		{"SetHead", func() error { _, err := db.SetHead(ctx, keyA, "t1"); return err }},
		{"AddMessage", func() error { return db.AddMessage(ctx, keyA, "t1", "m1") }},
		{"Message", func() error { _, _, err := db.Message(ctx, keyA, "m1"); return err }},
		{"PutJob", func() error { return db.PutJob(ctx, &bot.Job{ID: "j1"}) }},
		{"Job", func() error { _, err := db.Job(ctx, "j1"); return err }},
		{"LiveJobs", func() error { _, err := db.LiveJobs(ctx); return err }},
		{"Usage", func() error { _, _, err := db.Usage(ctx, "discord", "g", "u", t0); return err }},
		{"Sweep", func() error { _, err := db.Sweep(ctx, t0); return err }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			if err := c.call(); !errors.Is(err, context.Canceled) {
				t.Errorf("got %v, want context.Canceled", err)
			}
		})
	}
	if got := db.countKeys(t, bucketConvs); got != 0 {
		t.Errorf("conversations after cancelled calls: got %d, want 0", got)
	}
}

func TestAddTurn(t *testing.T) {
	ctx := context.Background()
	clock := newClock(t0)
	db := openTest(t, Options{Now: clock.Now})

	seed := int64(42)
	t1 := turn("t1")
	t1.Seed = &seed
	c, err := db.AddTurn(ctx, keyA, t1, img(1), nil, nil)
	if err != nil {
		t.Fatalf("AddTurn: %v", err)
	}
	clock.Set(t0.Add(time.Minute))
	t2 := turn("t2")
	t2.Parent, t2.Kind, t2.SHA256 = "t1", bot.KindEdit, strings.ToUpper(shaOf(img(2)))
	c, err = db.AddTurn(ctx, keyA, t2, img(2), nil, nil)
	if err != nil {
		t.Fatalf("AddTurn with its sha256 given: %v", err)
	}

	t.Run("returned state", func(t *testing.T) {
		if got, want := c.Key, keyA; got != want {
			t.Errorf("key: got %v, want %v", got, want)
		}
		if got, want := c.Head, "t2"; got != want {
			t.Errorf("head: got %q, want %q", got, want)
		}
		if got, want := c.Updated, t0.Add(time.Minute); !got.Equal(want) {
			t.Errorf("updated: got %v, want %v", got, want)
		}
		var ids []string
		for _, tt := range c.Turns {
			ids = append(ids, tt.ID)
		}
		if got, want := ids, []string{"t1", "t2"}; !slices.Equal(got, want) {
			t.Errorf("turns: got %v, want %v", got, want)
		}
		if got, want := c.Turn("t1").SHA256, shaOf(img(1)); got != want {
			t.Errorf("computed sha256: got %s, want %s", got, want)
		}
		if got, want := c.Turn("t2").SHA256, shaOf(img(2)); got != want {
			t.Errorf("given sha256 (upper case): got %s, want lower-case %s", got, want)
		}
		if got := c.Turn("t1").Seed; got == nil || *got != 42 {
			t.Errorf("seed: got %v, want 42", got)
		}
	})
	t.Run("read equals returned", func(t *testing.T) {
		got, err := db.Conversation(ctx, keyA)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("Conversation:\ngot  %+v\nwant %+v", got, c)
		}
	})
	t.Run("returned is a copy", func(t *testing.T) {
		seed = 7
		c.Turns[0].Prompt = "scribbled"
		c.Head = "scribbled"
		got, err := db.Conversation(ctx, keyA)
		if err != nil {
			t.Fatal(err)
		}
		if got.Head != "t2" || got.Turns[0].Prompt != "prompt t1" || *got.Turns[0].Seed != 42 {
			t.Errorf("stored state changed through a returned copy: %+v", got)
		}
	})
	t.Run("image round trip", func(t *testing.T) {
		for i := 1; i <= 2; i++ {
			got, err := db.Image(ctx, shaOf(img(i)))
			if err != nil {
				t.Fatal(err)
			}
			if want := img(i); !slices.Equal(got, want) {
				t.Errorf("Image %d: got %x, want %x", i, got, want)
			}
		}
	})
	t.Run("not found", func(t *testing.T) {
		if _, err := db.Conversation(ctx, keyB); !errors.Is(err, bot.ErrNotFound) {
			t.Errorf("Conversation of unknown key: got %v, want ErrNotFound", err)
		}
		if _, err := db.Image(ctx, shaOf(img(99))); !errors.Is(err, bot.ErrNotFound) {
			t.Errorf("Image of unknown sha: got %v, want ErrNotFound", err)
		}
	})

	errs := []struct {
		name string
		key  bot.ConvKey
		turn bot.Turn
		data []byte
		job  *bot.Job
		want string
	}{
		{"invalid key", bot.ConvKey{Platform: "discord", Channel: "a/b"}, turn("x1"), img(3), nil, "invalid conversation key"},
		{"no channel", bot.ConvKey{Platform: "discord"}, turn("x1"), img(3), nil, "invalid conversation key"},
		{"no turn id", keyA, turn(""), img(3), nil, "no id"},
		{"no bytes", keyA, turn("x1"), nil, nil, "no image bytes"},
		{"sha256 mismatch", keyA, func() bot.Turn { tt := turn("x1"); tt.SHA256 = shaOf(img(4)); return tt }(), img(3), nil, "does not match"},
		{"duplicate turn id", keyA, turn("t1"), img(3), nil, "already in the conversation"},
		{"job without id", keyA, turn("x1"), img(3), &bot.Job{}, "job has no id"},
	}
	for _, tc := range errs {
		t.Run("error/"+tc.name, func(t *testing.T) {
			_, err := db.AddTurn(ctx, tc.key, tc.turn, tc.data, tc.job, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "store: add turn ") {
				t.Errorf("error %q: want the operation as prefix", err)
			}
			got, err := db.Conversation(ctx, keyA)
			if err != nil {
				t.Fatal(err)
			}
			if got.Head != "t2" || len(got.Turns) != 2 {
				t.Errorf("conversation changed by a failed AddTurn: head %q, %d turns", got.Head, len(got.Turns))
			}
			if _, err := db.Image(ctx, shaOf(img(3))); !errors.Is(err, bot.ErrNotFound) {
				t.Errorf("image of a failed AddTurn: got %v, want ErrNotFound", err)
			}
		})
	}
}

func TestAddTurnPrunes(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, Options{History: 20})
	for i := range 25 {
		if _, err := db.AddTurn(ctx, keyA, turn(turnID(i)), img(i), nil, nil); err != nil {
			t.Fatal(err)
		}
		if err := db.AddMessage(ctx, keyA, turnID(i), fmt.Sprintf("m%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c, err := db.Conversation(ctx, keyA)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tt := range c.Turns {
		ids = append(ids, tt.ID)
	}
	var want []string
	for i := 5; i < 25; i++ {
		want = append(want, turnID(i))
	}
	if !slices.Equal(ids, want) {
		t.Errorf("turns kept: got %v, want %v", ids, want)
	}
	if got, want := c.Head, turnID(24); got != want {
		t.Errorf("head: got %q, want %q", got, want)
	}
	for i := range 25 {
		pruned := i < 5
		t.Run(fmt.Sprintf("turn %d", i), func(t *testing.T) {
			_, imgErr := db.Image(ctx, shaOf(img(i)))
			_, turnID, msgErr := db.Message(ctx, keyA, fmt.Sprintf("m%02d", i))
			if pruned {
				if !errors.Is(imgErr, bot.ErrNotFound) {
					t.Errorf("image of pruned turn: got %v, want ErrNotFound", imgErr)
				}
				if !errors.Is(msgErr, bot.ErrNotFound) {
					t.Errorf("message of pruned turn: got %v, want ErrNotFound", msgErr)
				}
				return
			}
			if imgErr != nil {
				t.Errorf("image of kept turn: %v", imgErr)
			}
			if msgErr != nil || turnID != c.Turns[i-5].ID {
				t.Errorf("message of kept turn: got %q, %v; want %q", turnID, msgErr, c.Turns[i-5].ID)
			}
		})
	}
	for _, b := range []struct {
		name []byte
		want int
	}{{bucketImages, 20}, {bucketRefs, 20}, {bucketMessages, 20}} {
		if got := db.countKeys(t, b.name); got != b.want {
			t.Errorf("keys in %s: got %d, want %d", b.name, got, b.want)
		}
	}

	t.Run("image shared with a kept turn survives", func(t *testing.T) {
		db := openTest(t, Options{History: 2})
		steps := []struct {
			id   string
			data []byte
		}{{"a", img(1)}, {"b", img(2)}, {"c", img(1)}, {"d", img(3)}}
		for _, s := range steps {
			if _, err := db.AddTurn(ctx, keyA, turn(s.id), s.data, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		// a and b are pruned; c still uses img(1).
		if _, err := db.Image(ctx, shaOf(img(1))); err != nil {
			t.Errorf("image still used by turn c: %v", err)
		}
		if _, err := db.Image(ctx, shaOf(img(2))); !errors.Is(err, bot.ErrNotFound) {
			t.Errorf("image only pruned turn b used: got %v, want ErrNotFound", err)
		}
		if got, want := db.refs(t, shaOf(img(1))), uint64(1); got != want {
			t.Errorf("refcount of img(1): got %d, want %d", got, want)
		}
	})
	t.Run("never prunes the head", func(t *testing.T) {
		db := openTest(t, Options{History: 2})
		for _, id := range []string{"a", "b"} {
			if _, err := db.AddTurn(ctx, keyA, turn(id), img(len(id)+int(id[0])), nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		c, err := db.AddTurn(ctx, keyA, turn("c"), img(100), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.Head, "c"; got != want || c.Turn("c") == nil {
			t.Errorf("head after prune: got %q (turn present %v), want %q", got, c.Turn("c") != nil, want)
		}
	})
}

func TestImageDedup(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, Options{History: 1})
	shared := img(7)
	steps := []struct {
		name      string
		key       bot.ConvKey
		id        string
		data      []byte
		wantImgs  int
		wantRefs  uint64 // of shared
		wantFound bool   // shared still stored
	}{
		{"A adds the image", keyA, "a1", shared, 1, 1, true},
		{"B adds the same bytes", keyB, "b1", shared, 1, 2, true},
		{"A lets go", keyA, "a2", img(8), 2, 1, true},
		{"B lets go", keyB, "b2", img(9), 2, 0, false},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if _, err := db.AddTurn(ctx, s.key, turn(s.id), s.data, nil, nil); err != nil {
				t.Fatal(err)
			}
			if got := db.countKeys(t, bucketImages); got != s.wantImgs {
				t.Errorf("images stored: got %d, want %d", got, s.wantImgs)
			}
			if got := db.refs(t, shaOf(shared)); got != s.wantRefs {
				t.Errorf("refcount: got %d, want %d", got, s.wantRefs)
			}
			_, err := db.Image(ctx, shaOf(shared))
			if got := err == nil; got != s.wantFound {
				t.Errorf("shared image found: got %v (%v), want %v", got, err, s.wantFound)
			}
		})
	}
}

func TestAddTurnAtomicWithJobAndCharge(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, Options{Now: newClock(t0).Now})
	job := &bot.Job{ID: "j1", Kind: bot.KindImagine, Conv: keyA, User: "u1", Prompt: "a cat", Model: "flux-kontext-pro",
		State: bot.JobDelivered, Result: "t1", Created: t0, Updated: t0, Origin: map[string]string{"channel": "chan1"}}
	charge := &bot.Charge{Platform: "discord", Workspace: "guildA", User: "u1", Model: "flux-kontext-pro", USD: 0.04, At: t0}

	t.Run("all land", func(t *testing.T) {
		if _, err := db.AddTurn(ctx, keyA, turn("t1"), img(1), job, charge); err != nil {
			t.Fatal(err)
		}
		got, err := db.Job(ctx, "j1")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, job) {
			t.Errorf("job:\ngot  %+v\nwant %+v", got, job)
		}
		day, month, err := db.Usage(ctx, "discord", "guildA", "u1", t0)
		if err != nil {
			t.Fatal(err)
		}
		if want := (bot.Usage{Images: 1, Spend: 0.04}); day != want || month != want {
			t.Errorf("usage: got day %+v month %+v, want %+v", day, month, want)
		}
	})
	t.Run("none land on failure", func(t *testing.T) {
		// A year past 9999 cannot be encoded, so the job put fails after
		// the image and conversation were written in the transaction.
		bad := *job
		bad.ID = "j2"
		bad.Updated = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
		_, err := db.AddTurn(ctx, keyA, turn("t2"), img(2), &bad, charge)
		if err == nil {
			t.Fatal("AddTurn with an unencodable job: got nil error")
		}
		c, err := db.Conversation(ctx, keyA)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(c.Turns), 1; got != want || c.Head != "t1" {
			t.Errorf("turns after rollback: got %d (head %q), want %d (head t1)", got, c.Head, want)
		}
		if _, err := db.Image(ctx, shaOf(img(2))); !errors.Is(err, bot.ErrNotFound) {
			t.Errorf("image after rollback: got %v, want ErrNotFound", err)
		}
		if _, err := db.Job(ctx, "j2"); !errors.Is(err, bot.ErrNotFound) {
			t.Errorf("job after rollback: got %v, want ErrNotFound", err)
		}
		day, _, err := db.Usage(ctx, "discord", "guildA", "u1", t0)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := day.Images, 1; got != want {
			t.Errorf("usage images after rollback: got %d, want %d", got, want)
		}
	})
}

func TestSetHead(t *testing.T) {
	ctx := context.Background()
	clock := newClock(t0)
	db := openTest(t, Options{Now: clock.Now})
	for i, id := range []string{"t1", "t2", "t3"} {
		if _, err := db.AddTurn(ctx, keyA, turn(id), img(i), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	clock.Set(t0.Add(time.Hour))
	tests := []struct {
		name     string
		key      bot.ConvKey
		id       string
		wantErr  error
		wantHead string
	}{
		{"back to the parent", keyA, "t2", nil, "t2"},
		{"to the first", keyA, "t1", nil, "t1"},
		{"unknown turn", keyA, "t9", bot.ErrNotFound, "t1"},
		{"unknown conversation", keyB, "t1", bot.ErrNotFound, ""},
		{"forward again", keyA, "t3", nil, "t3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := db.SetHead(ctx, tc.key, tc.id)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("SetHead: got %v, want %v", err, tc.wantErr)
			}
			if err == nil {
				if got, want := c.Head, tc.wantHead; got != want {
					t.Errorf("returned head: got %q, want %q", got, want)
				}
				if got, want := c.Updated, t0.Add(time.Hour); !got.Equal(want) {
					t.Errorf("updated: got %v, want %v", got, want)
				}
			}
			if tc.wantHead == "" {
				return
			}
			stored, err := db.Conversation(ctx, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := stored.Head, tc.wantHead; got != want {
				t.Errorf("stored head: got %q, want %q", got, want)
			}
		})
	}
}

func TestMessages(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, Options{})
	// The same channel, thread and message ids in two workspaces.
	for _, k := range []bot.ConvKey{keyA, keyB} {
		for i, id := range []string{"t1", "t2"} {
			if _, err := db.AddTurn(ctx, k, turn(id), img(i), nil, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := db.AddMessage(ctx, keyA, "t1", "100"); err != nil {
		t.Fatal(err)
	}
	if err := db.AddMessage(ctx, keyB, "t2", "200"); err != nil {
		t.Fatal(err)
	}

	t.Run("add errors", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			key     bot.ConvKey
			id, msg string
			wantErr error
		}{
			{"unknown conversation", bot.ConvKey{Platform: "discord", Workspace: "guildC", Channel: "chan1"}, "t1", "300", bot.ErrNotFound},
			{"unknown turn", keyA, "t9", "300", bot.ErrNotFound},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := db.AddMessage(ctx, tc.key, tc.id, tc.msg); !errors.Is(err, tc.wantErr) {
					t.Errorf("got %v, want %v", err, tc.wantErr)
				}
			})
		}
		if err := db.AddMessage(ctx, keyA, "t1", ""); err == nil {
			t.Error("empty message id: got nil error")
		}
	})

	lookups := []struct {
		name     string
		key      bot.ConvKey
		msg      string
		wantKey  bot.ConvKey
		wantTurn string
		wantErr  error
	}{
		{"own workspace", keyA, "100", keyA, "t1", nil},
		{"other conversation, same workspace", bot.ConvKey{Platform: "discord", Workspace: "guildA", Channel: "other"}, "100", keyA, "t1", nil},
		{"B's message from B", keyB, "200", keyB, "t2", nil},
		{"A's message from B", keyB, "100", bot.ConvKey{}, "", bot.ErrNotFound},
		{"B's message from A", keyA, "200", bot.ConvKey{}, "", bot.ErrNotFound},
		{"other platform", bot.ConvKey{Platform: "slack", Workspace: "guildA", Channel: "chan1"}, "100", bot.ConvKey{}, "", bot.ErrNotFound},
		{"DM workspace", bot.ConvKey{Platform: "discord", Channel: "chan1"}, "100", bot.ConvKey{}, "", bot.ErrNotFound},
		{"unknown message", keyA, "999", bot.ConvKey{}, "", bot.ErrNotFound},
	}
	for _, tc := range lookups {
		t.Run("lookup/"+tc.name, func(t *testing.T) {
			k, id, err := db.Message(ctx, tc.key, tc.msg)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Message: got %v, want %v", err, tc.wantErr)
			}
			if k != tc.wantKey || id != tc.wantTurn {
				t.Errorf("Message: got %v %q, want %v %q", k, id, tc.wantKey, tc.wantTurn)
			}
		})
	}

	t.Run("listed on the turn", func(t *testing.T) {
		c, err := db.Conversation(ctx, keyA)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.Turn("t1").Messages, []string{"100"}; !slices.Equal(got, want) {
			t.Errorf("messages of t1: got %v, want %v", got, want)
		}
	})
	t.Run("repeat is idempotent", func(t *testing.T) {
		if err := db.AddMessage(ctx, keyA, "t1", "100"); err != nil {
			t.Fatal(err)
		}
		c, _ := db.Conversation(ctx, keyA)
		if got, want := c.Turn("t1").Messages, []string{"100"}; !slices.Equal(got, want) {
			t.Errorf("messages of t1: got %v, want %v", got, want)
		}
	})
	t.Run("moves to another turn", func(t *testing.T) {
		if err := db.AddMessage(ctx, keyA, "t2", "100"); err != nil {
			t.Fatal(err)
		}
		_, id, err := db.Message(ctx, keyA, "100")
		if err != nil || id != "t2" {
			t.Errorf("Message after move: got %q, %v; want t2", id, err)
		}
		c, _ := db.Conversation(ctx, keyA)
		if got := c.Turn("t1").Messages; len(got) != 0 {
			t.Errorf("messages of t1 after move: got %v, want none", got)
		}
		if got, want := c.Turn("t2").Messages, []string{"100"}; !slices.Equal(got, want) {
			t.Errorf("messages of t2 after move: got %v, want %v", got, want)
		}
	})
	t.Run("bounded per turn", func(t *testing.T) {
		var want []string
		for i := range MaxMessagesPerTurn + 3 {
			m := fmt.Sprintf("b%02d", i)
			if err := db.AddMessage(ctx, keyB, "t1", m); err != nil {
				t.Fatal(err)
			}
			if i >= 3 {
				want = append(want, m)
			}
		}
		c, _ := db.Conversation(ctx, keyB)
		if got := c.Turn("t1").Messages; !slices.Equal(got, want) {
			t.Errorf("messages of t1: got %v, want %v", got, want)
		}
		if _, _, err := db.Message(ctx, keyB, "b00"); !errors.Is(err, bot.ErrNotFound) {
			t.Errorf("dropped message: got %v, want ErrNotFound", err)
		}
		if _, id, err := db.Message(ctx, keyB, "b12"); err != nil || id != "t1" {
			t.Errorf("kept message: got %q, %v; want t1", id, err)
		}
	})
	t.Run("messages given with the turn", func(t *testing.T) {
		tt := turn("t3")
		tt.Messages = []string{"300", "301"}
		c, err := db.AddTurn(ctx, keyA, tt, img(3), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.Turn("t3").Messages, []string{"300", "301"}; !slices.Equal(got, want) {
			t.Errorf("messages of t3: got %v, want %v", got, want)
		}
		if _, id, err := db.Message(ctx, keyA, "301"); err != nil || id != "t3" {
			t.Errorf("Message 301: got %q, %v; want t3", id, err)
		}
	})
}

func TestJobs(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, Options{})
	mk := func(id string, st bot.JobState, created time.Time) *bot.Job {
		return &bot.Job{ID: id, Kind: bot.KindEdit, Conv: keyA, User: "u1", Prompt: "p " + id, Model: "m",
			Seed: 5, Base: "t1", State: st, Created: created, Updated: created}
	}
	jobs := []*bot.Job{
		mk("j5", bot.JobSubmitted, t0.Add(2*time.Second)),
		mk("j4", bot.JobWaiting, t0.Add(time.Second)),
		mk("j3", bot.JobWaiting, t0.Add(time.Second)), // same Created as j4: ID decides
		mk("j2", bot.JobDelivered, t0),
		mk("j1", bot.JobWaiting, t0),
		mk("j0", bot.JobFailed, t0),
		mk("j6", bot.JobCanceled, t0),
	}
	for _, j := range jobs {
		if err := db.PutJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("round trip", func(t *testing.T) {
		for _, want := range jobs {
			got, err := db.Job(ctx, want.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Job(%s):\ngot  %+v\nwant %+v", want.ID, got, want)
			}
		}
	})
	t.Run("unknown", func(t *testing.T) {
		if _, err := db.Job(ctx, "nope"); !errors.Is(err, bot.ErrNotFound) {
			t.Errorf("got %v, want ErrNotFound", err)
		}
	})
	t.Run("put errors", func(t *testing.T) {
		if err := db.PutJob(ctx, nil); err == nil {
			t.Error("nil job: got nil error")
		}
		if err := db.PutJob(ctx, &bot.Job{}); err == nil {
			t.Error("job without id: got nil error")
		}
	})
	liveIDs := func(t *testing.T) []string {
		t.Helper()
		live, err := db.LiveJobs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, j := range live {
			ids = append(ids, j.ID)
		}
		return ids
	}
	t.Run("live, oldest first", func(t *testing.T) {
		if got, want := liveIDs(t), []string{"j1", "j3", "j4", "j5"}; !slices.Equal(got, want) {
			t.Errorf("LiveJobs: got %v, want %v", got, want)
		}
	})
	t.Run("replace", func(t *testing.T) {
		j := mk("j3", bot.JobDelivered, t0.Add(time.Second))
		j.Result = "t7"
		if err := db.PutJob(ctx, j); err != nil {
			t.Fatal(err)
		}
		got, err := db.Job(ctx, "j3")
		if err != nil {
			t.Fatal(err)
		}
		if got.State != bot.JobDelivered || got.Result != "t7" {
			t.Errorf("replaced job: got %+v", got)
		}
		if got, want := liveIDs(t), []string{"j1", "j4", "j5"}; !slices.Equal(got, want) {
			t.Errorf("LiveJobs after replace: got %v, want %v", got, want)
		}
	})
	t.Run("none", func(t *testing.T) {
		db := openTest(t, Options{})
		live, err := db.LiveJobs(ctx)
		if err != nil || len(live) != 0 {
			t.Errorf("LiveJobs of an empty store: got %v, %v; want none", live, err)
		}
	})
}

func TestUsage(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, Options{})
	east := time.FixedZone("UTC+5", 5*3600)
	charges := []struct {
		user string
		at   time.Time
		usd  float64
	}{
		{"u1", time.Date(2025, 1, 31, 23, 59, 59, 0, time.UTC), 0.04},
		// 2025-02-01 03:00 in UTC+5 is still 2025-01-31 22:00 UTC.
		{"u1", time.Date(2025, 2, 1, 3, 0, 0, 0, east), 0.08},
		{"u1", time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC), 0.04},
		{"u2", time.Date(2025, 1, 15, 12, 0, 0, 0, time.UTC), 0.25},
	}
	for i, c := range charges {
		ch := &bot.Charge{Platform: "slack", Workspace: "T1", User: c.user, Model: "m", USD: c.usd, At: c.at}
		if _, err := db.AddTurn(ctx, keyA, turn(turnID(i)), img(i), nil, ch); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name               string
		platform, ws, user string
		at                 time.Time
		wantDay, wantMonth bot.Usage
	}{
		{"u1 on Jan 31", "slack", "T1", "u1", time.Date(2025, 1, 31, 0, 0, 0, 0, time.UTC),
			bot.Usage{Images: 2, Spend: 0.12}, bot.Usage{Images: 3, Spend: 0.37}},
		{"u1 on Feb 1", "slack", "T1", "u1", time.Date(2025, 2, 1, 23, 59, 0, 0, time.UTC),
			bot.Usage{Images: 1, Spend: 0.04}, bot.Usage{Images: 1, Spend: 0.04}},
		{"asked in a zone east of UTC", "slack", "T1", "u1", time.Date(2025, 2, 1, 4, 59, 0, 0, east),
			bot.Usage{Images: 2, Spend: 0.12}, bot.Usage{Images: 3, Spend: 0.37}},
		{"u2 on another day of the month", "slack", "T1", "u2", time.Date(2025, 1, 31, 0, 0, 0, 0, time.UTC),
			bot.Usage{}, bot.Usage{Images: 3, Spend: 0.37}},
		{"other workspace", "slack", "T2", "u1", time.Date(2025, 1, 31, 0, 0, 0, 0, time.UTC),
			bot.Usage{}, bot.Usage{}},
		{"other platform", "discord", "T1", "u1", time.Date(2025, 1, 31, 0, 0, 0, 0, time.UTC),
			bot.Usage{}, bot.Usage{}},
		{"next year", "slack", "T1", "u1", time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC),
			bot.Usage{}, bot.Usage{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			day, month, err := db.Usage(ctx, tc.platform, tc.ws, tc.user, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			if !usageEq(day, tc.wantDay) {
				t.Errorf("user day: got %+v, want %+v", day, tc.wantDay)
			}
			if !usageEq(month, tc.wantMonth) {
				t.Errorf("workspace month: got %+v, want %+v", month, tc.wantMonth)
			}
		})
	}
}

func usageEq(a, b bot.Usage) bool {
	d := a.Spend - b.Spend
	return a.Images == b.Images && d < 1e-9 && d > -1e-9
}

func TestSweep(t *testing.T) {
	ctx := context.Background()
	clock := newClock(t0)
	db := openTest(t, Options{Now: clock.Now})
	old := bot.ConvKey{Platform: "discord", Workspace: "g", Channel: "old"}
	fresh := bot.ConvKey{Platform: "discord", Workspace: "g", Channel: "fresh"}
	shared := img(50)

	// Old conversation, last touched at t0: 3 turns, one image shared with
	// the fresh conversation, 2 message mappings.
	for i, data := range [][]byte{img(1), img(2), shared} {
		ch := &bot.Charge{Platform: "discord", Workspace: "g", User: "u", USD: 1, At: t0}
		if _, err := db.AddTurn(ctx, old, turn(turnID(i)), data, nil, ch); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []string{"o1", "o2"} {
		if err := db.AddMessage(ctx, old, turnID(1), m); err != nil {
			t.Fatal(err)
		}
	}
	jobs := []*bot.Job{
		{ID: "old-delivered", State: bot.JobDelivered, Updated: t0},
		{ID: "old-failed", State: bot.JobFailed, Updated: t0},
		{ID: "old-waiting", State: bot.JobWaiting, Updated: t0},
		{ID: "old-submitted", State: bot.JobSubmitted, Updated: t0},
		{ID: "fresh-delivered", State: bot.JobDelivered, Updated: t0.Add(48 * time.Hour)},
	}
	for _, j := range jobs {
		if err := db.PutJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	// Fresh conversation, touched two days later.
	clock.Set(t0.Add(48 * time.Hour))
	for i, data := range [][]byte{shared, img(3)} {
		if _, err := db.AddTurn(ctx, fresh, turn(turnID(i)), data, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.AddMessage(ctx, fresh, turnID(0), "f1"); err != nil {
		t.Fatal(err)
	}

	st, err := db.Sweep(ctx, t0.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if want := (SweepStats{Conversations: 1, Images: 2, Jobs: 2, Messages: 2}); st != want {
		t.Errorf("SweepStats: got %+v, want %+v", st, want)
	}

	checks := []struct {
		name    string
		err     func() error
		wantErr error
	}{
		{"old conversation", func() error { _, err := db.Conversation(ctx, old); return err }, bot.ErrNotFound},
		{"fresh conversation", func() error { _, err := db.Conversation(ctx, fresh); return err }, nil},
		{"old-only image 1", func() error { _, err := db.Image(ctx, shaOf(img(1))); return err }, bot.ErrNotFound},
		{"old-only image 2", func() error { _, err := db.Image(ctx, shaOf(img(2))); return err }, bot.ErrNotFound},
		{"shared image", func() error { _, err := db.Image(ctx, shaOf(shared)); return err }, nil},
		{"fresh image", func() error { _, err := db.Image(ctx, shaOf(img(3))); return err }, nil},
		{"old message", func() error { _, _, err := db.Message(ctx, old, "o1"); return err }, bot.ErrNotFound},
		{"fresh message", func() error { _, _, err := db.Message(ctx, fresh, "f1"); return err }, nil},
		{"old delivered job", func() error { _, err := db.Job(ctx, "old-delivered"); return err }, bot.ErrNotFound},
		{"old failed job", func() error { _, err := db.Job(ctx, "old-failed"); return err }, bot.ErrNotFound},
		{"old waiting job (live)", func() error { _, err := db.Job(ctx, "old-waiting"); return err }, nil},
		{"old submitted job (live)", func() error { _, err := db.Job(ctx, "old-submitted"); return err }, nil},
		{"fresh delivered job", func() error { _, err := db.Job(ctx, "fresh-delivered"); return err }, nil},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if err := c.err(); !errors.Is(err, c.wantErr) {
				t.Errorf("got %v, want %v", err, c.wantErr)
			}
		})
	}
	t.Run("usage kept", func(t *testing.T) {
		day, month, err := db.Usage(ctx, "discord", "g", "u", t0)
		if err != nil {
			t.Fatal(err)
		}
		if want := (bot.Usage{Images: 3, Spend: 3}); day != want || month != want {
			t.Errorf("usage: got %+v %+v, want %+v", day, month, want)
		}
	})
	t.Run("bucket sizes", func(t *testing.T) {
		for _, b := range []struct {
			name []byte
			want int
		}{{bucketConvs, 1}, {bucketImages, 2}, {bucketRefs, 2}, {bucketMessages, 1}, {bucketJobs, 3}} {
			if got := db.countKeys(t, b.name); got != b.want {
				t.Errorf("keys in %s: got %d, want %d", b.name, got, b.want)
			}
		}
		if got, want := db.refs(t, shaOf(shared)), uint64(1); got != want {
			t.Errorf("refcount of shared image: got %d, want %d", got, want)
		}
	})
	t.Run("second sweep removes nothing", func(t *testing.T) {
		st, err := db.Sweep(ctx, t0.Add(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if st != (SweepStats{}) {
			t.Errorf("SweepStats: got %+v, want zero", st)
		}
	})
	if err := db.check(); err != nil {
		t.Errorf("consistency check: %v", err)
	}
}

// TestConcurrent runs writers and readers at once; run it with -race.
func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, Options{History: 5})
	const workers, each = 4, 15
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			key := bot.ConvKey{Platform: "discord", Workspace: "g", Channel: fmt.Sprintf("c%d", w)}
			for i := range each {
				id := turnID(i)
				if _, err := db.AddTurn(ctx, key, turn(id), img(i%3), nil,
					&bot.Charge{Platform: "discord", Workspace: "g", User: "u", USD: 1, At: t0}); err != nil {
					t.Error(err)
					return
				}
				if err := db.AddMessage(ctx, key, id, fmt.Sprintf("m%d-%d", w, i)); err != nil {
					t.Error(err)
					return
				}
				if _, err := db.Conversation(ctx, key); err != nil {
					t.Error(err)
					return
				}
				if _, _, err := db.Usage(ctx, "discord", "g", "u", t0); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	day, _, err := db.Usage(ctx, "discord", "g", "u", t0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := day.Images, workers*each; got != want {
		t.Errorf("usage images: got %d, want %d", got, want)
	}
	// Each conversation keeps its last 5 turns, which cycle over 3 images.
	if got, want := db.countKeys(t, bucketImages), 3; got != want {
		t.Errorf("images: got %d, want %d", got, want)
	}
	if got, want := db.countKeys(t, bucketMessages), workers*5; got != want {
		t.Errorf("message mappings: got %d, want %d", got, want)
	}
	var refs uint64
	for i := range 3 {
		refs += db.refs(t, shaOf(img(i)))
	}
	if got, want := refs, uint64(workers*5); got != want {
		t.Errorf("total refcount: got %d, want %d (one per kept turn)", got, want)
	}
}

func TestClaim(t *testing.T) {
	ctx := context.Background()
	clock := newClock(t0)
	path := filepath.Join(t.TempDir(), "kontext.db")
	db, err := Open(path, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	claim := func(key string, ttl time.Duration) bool {
		t.Helper()
		first, err := db.Claim(ctx, key, ttl)
		if err != nil {
			t.Fatalf("Claim(%q): %v", key, err)
		}
		return first
	}
	steps := []struct {
		name    string
		advance time.Duration
		key     string
		want    bool
	}{
		{"first claim", 0, "slack/T1/trigger/1", true},
		{"same key again", time.Minute, "slack/T1/trigger/1", false},
		{"other key", 0, "slack/T1/trigger/2", true},
		{"just before expiry", 3*time.Minute + 59*time.Second, "slack/T1/trigger/1", false},
		{"after expiry", 2 * time.Second, "slack/T1/trigger/1", true},
	}
	for _, s := range steps {
		clock.Set(clock.Now().Add(s.advance))
		if got := claim(s.key, 5*time.Minute); got != s.want {
			t.Errorf("%s: Claim(%q) = %v, want %v", s.name, s.key, got, s.want)
		}
	}

	// A claim survives a restart.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := claim("slack/T1/trigger/2", 5*time.Minute); got {
		t.Errorf("after reopen: Claim(trigger/2) = true, want false (claimed before the restart)")
	}

	// The sweep removes expired claims only.
	clock.Set(clock.Now().Add(3 * time.Minute)) // trigger/2 expired, trigger/1 not
	st, err := db.Sweep(ctx, clock.Now().Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if st.Claims != 1 {
		t.Errorf("Sweep removed %d claims, want 1", st.Claims)
	}
	if got := db.countKeys(t, bucketClaims); got != 1 {
		t.Errorf("claims left after sweep: %d, want 1", got)
	}

	if _, err := db.Claim(ctx, "", time.Minute); err == nil {
		t.Error("Claim with an empty key: no error")
	}
}
