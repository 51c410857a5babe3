package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"kontextbot/bot"
)

func testReopenKeepsData(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	db := open(t, Options{})
	if _, err := db.AddTurn(ctx, keyA, Turn("t1"), Img(1), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.AddMessage(ctx, keyA, "t1", "m1"); err != nil {
		t.Fatal(err)
	}
	job := &bot.Job{ID: "j1", Kind: bot.KindEdit, Conv: keyA, User: "u", State: bot.JobWaiting, CreateSent: t0, Created: t0, Updated: t0}
	if err := db.PutJob(ctx, job); err != nil {
		t.Fatal(err)
	}
	db = db.Reopen(t, Options{})
	c, err := db.Conversation(ctx, keyA)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Head, "t1"; got != want {
		t.Errorf("head after reopen: got %q, want %q", got, want)
	}
	if got, err := db.Image(ctx, SHA(Img(1))); err != nil || !slices.Equal(got, Img(1)) {
		t.Errorf("image after reopen: got %x, %v; want %x", got, err, Img(1))
	}
	if _, id, err := db.Message(ctx, keyA, "m1"); err != nil || id != "t1" {
		t.Errorf("message after reopen: got %q, %v; want t1", id, err)
	}
	live, err := db.LiveJobs(ctx)
	if err != nil || len(live) != 1 || !reflect.DeepEqual(live[0], job) {
		t.Errorf("live jobs after reopen: got %v, %v; want [%+v]", live, err, job)
	}
	check(t, db)
}

func testCancelledContext(t *testing.T, open OpenFunc) {
	db := open(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := []struct {
		name string
		call func() error
	}{
		{"Conversation", func() error { _, err := db.Conversation(ctx, keyA); return err }},
		{"Image", func() error { _, err := db.Image(ctx, SHA(Img(1))); return err }},
		{"Thumbnail", func() error { _, err := db.Thumbnail(ctx, SHA(Img(1))); return err }},
		{"PutThumbnail", func() error { return db.PutThumbnail(ctx, SHA(Img(1)), Thumb(1)) }},
		{"AddTurn", func() error { _, err := db.AddTurn(ctx, keyA, Turn("t1"), Img(1), nil, nil); return err }},
		{"SetHead", func() error { _, err := db.SetHead(ctx, keyA, "t1"); return err }},
		{"DeleteTurn", func() error { _, err := db.DeleteTurn(ctx, keyA, "t1"); return err }},
		{"AddMessage", func() error { return db.AddMessage(ctx, keyA, "t1", "m1") }},
		{"Message", func() error { _, _, err := db.Message(ctx, keyA, "m1"); return err }},
		{"PutJob", func() error { return db.PutJob(ctx, &bot.Job{ID: "j1"}) }},
		{"Job", func() error { _, err := db.Job(ctx, "j1"); return err }},
		{"LiveJobs", func() error { _, err := db.LiveJobs(ctx); return err }},
		{"Usage", func() error { _, _, err := db.Usage(ctx, "discord", "g", "u", t0); return err }},
		{"Claim", func() error { _, err := db.Claim(ctx, "k", time.Minute); return err }},
		{"Sweep", func() error { _, err := db.Sweep(ctx, t0); return err }},
		{"Ping", func() error { return db.Ping(ctx) }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			if err := c.call(); !errors.Is(err, context.Canceled) {
				t.Errorf("got %v, want context.Canceled", err)
			}
		})
	}
	if got := counts(t, db); got != (Counts{}) {
		t.Errorf("records after cancelled calls: got %+v, want none", got)
	}
}

func testPing(t *testing.T, open OpenFunc) {
	db := open(t, Options{})
	if err := db.Ping(context.Background()); err != nil {
		t.Errorf("Ping of an open store: %v", err)
	}
}

func testAddTurn(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	clock := NewClock(t0)
	db := open(t, Options{Now: clock.Now})

	seed := int64(42)
	t1 := Turn("t1")
	t1.Seed = &seed
	c, err := db.AddTurn(ctx, keyA, t1, Img(1), nil, nil)
	if err != nil {
		t.Fatalf("AddTurn: %v", err)
	}
	clock.Set(t0.Add(time.Minute))
	t2 := Turn("t2")
	t2.Parent, t2.Kind, t2.SHA256 = "t1", bot.KindEdit, strings.ToUpper(SHA(Img(2)))
	c, err = db.AddTurn(ctx, keyA, t2, Img(2), nil, nil)
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
		if got, want := c.Turn("t1").SHA256, SHA(Img(1)); got != want {
			t.Errorf("computed sha256: got %s, want %s", got, want)
		}
		if got, want := c.Turn("t2").SHA256, SHA(Img(2)); got != want {
			t.Errorf("given sha256 (upper case): got %s, want lower-case %s", got, want)
		}
		if got := c.Turn("t1").Seed; got == nil || *got != 42 {
			t.Errorf("seed: got %v, want 42", got)
		}
		if got, want := c.Turn("t2").Parent, "t1"; got != want {
			t.Errorf("parent: got %q, want %q", got, want)
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
			got, err := db.Image(ctx, SHA(Img(i)))
			if err != nil {
				t.Fatal(err)
			}
			if want := Img(i); !slices.Equal(got, want) {
				t.Errorf("Image %d: got %x, want %x", i, got, want)
			}
		}
	})
	t.Run("not found", func(t *testing.T) {
		if _, err := db.Conversation(ctx, keyB); !errors.Is(err, bot.ErrNotFound) {
			t.Errorf("Conversation of unknown key: got %v, want ErrNotFound", err)
		}
		if _, err := db.Image(ctx, SHA(Img(99))); !errors.Is(err, bot.ErrNotFound) {
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
		{"invalid key", bot.ConvKey{Platform: "discord", Channel: "a/b"}, Turn("x1"), Img(3), nil, "invalid conversation key"},
		{"no channel", bot.ConvKey{Platform: "discord"}, Turn("x1"), Img(3), nil, "invalid conversation key"},
		{"no turn id", keyA, Turn(""), Img(3), nil, "no id"},
		{"no bytes", keyA, Turn("x1"), nil, nil, "no image bytes"},
		{"sha256 mismatch", keyA, func() bot.Turn { tt := Turn("x1"); tt.SHA256 = SHA(Img(4)); return tt }(), Img(3), nil, "does not match"},
		{"duplicate turn id", keyA, Turn("t1"), Img(3), nil, "already in the conversation"},
		{"job without id", keyA, Turn("x1"), Img(3), &bot.Job{}, "job has no id"},
	}
	for _, tc := range errs {
		t.Run("error/"+tc.name, func(t *testing.T) {
			_, err := db.AddTurn(ctx, tc.key, tc.turn, tc.data, tc.job, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "add turn ") {
				t.Errorf("error %q: want the operation (add turn) in it", err)
			}
			got, err := db.Conversation(ctx, keyA)
			if err != nil {
				t.Fatal(err)
			}
			if got.Head != "t2" || len(got.Turns) != 2 {
				t.Errorf("conversation changed by a failed AddTurn: head %q, %d turns", got.Head, len(got.Turns))
			}
			if _, err := db.Image(ctx, SHA(Img(3))); !errors.Is(err, bot.ErrNotFound) {
				t.Errorf("image of a failed AddTurn: got %v, want ErrNotFound", err)
			}
		})
	}
	check(t, db)
}

func testDefaultHistory(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	db := open(t, Options{})
	var c *bot.Conversation
	var err error
	for i := range DefaultHistory + 1 {
		if c, err = db.AddTurn(ctx, keyA, Turn(turnID(i)), Img(i), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := len(c.Turns), DefaultHistory; got != want {
		t.Errorf("turns kept with the default history: got %d, want %d", got, want)
	}
	if got, want := c.Turns[0].ID, turnID(1); got != want {
		t.Errorf("oldest turn kept: got %q, want %q", got, want)
	}
}

func testAddTurnPrunes(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	db := open(t, Options{History: 20})
	for i := range 25 {
		if _, err := db.AddTurn(ctx, keyA, Turn(turnID(i)), Img(i), nil, nil); err != nil {
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
			_, imgErr := db.Image(ctx, SHA(Img(i)))
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
	if got, want := counts(t, db), (Counts{Conversations: 1, Images: 20, ImageRefs: 20, Messages: 20}); got != want {
		t.Errorf("counts: got %+v, want %+v", got, want)
	}
	check(t, db)

	t.Run("image shared with a kept turn survives", func(t *testing.T) {
		db := open(t, Options{History: 2})
		steps := []struct {
			id   string
			data []byte
		}{{"a", Img(1)}, {"b", Img(2)}, {"c", Img(1)}, {"d", Img(3)}}
		for _, s := range steps {
			if _, err := db.AddTurn(ctx, keyA, Turn(s.id), s.data, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		// a and b are pruned; c still uses Img(1).
		if _, err := db.Image(ctx, SHA(Img(1))); err != nil {
			t.Errorf("image still used by turn c: %v", err)
		}
		if _, err := db.Image(ctx, SHA(Img(2))); !errors.Is(err, bot.ErrNotFound) {
			t.Errorf("image only pruned turn b used: got %v, want ErrNotFound", err)
		}
		if got, want := refs(t, db, SHA(Img(1))), 1; got != want {
			t.Errorf("refcount of Img(1): got %d, want %d", got, want)
		}
		check(t, db)
	})
	t.Run("never prunes the head", func(t *testing.T) {
		db := open(t, Options{History: 2})
		for _, id := range []string{"a", "b"} {
			if _, err := db.AddTurn(ctx, keyA, Turn(id), Img(len(id)+int(id[0])), nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		c, err := db.AddTurn(ctx, keyA, Turn("c"), Img(100), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.Head, "c"; got != want || c.Turn("c") == nil {
			t.Errorf("head after prune: got %q (turn present %v), want %q", got, c.Turn("c") != nil, want)
		}
	})
}

func testAddReference(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	t.Run("keeps the head", func(t *testing.T) {
		db := open(t, Options{})
		if _, err := db.AddTurn(ctx, keyA, Turn("base"), Img(1), nil, nil); err != nil {
			t.Fatal(err)
		}
		c, err := db.AddReference(ctx, keyA, Turn("ref"), Img(2))
		if err != nil {
			t.Fatalf("AddReference: %v", err)
		}
		if got, want := c.Head, "base"; got != want {
			t.Errorf("head after AddReference: got %q, want %q", got, want)
		}
		if c.Turn("ref") == nil || c.Turn("ref").SHA256 != SHA(Img(2)) {
			t.Errorf("reference turn: got %+v, want a turn with the image's sha256", c.Turn("ref"))
		}
		read, err := db.Conversation(ctx, keyA)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(read.Turns), 2; got != want || read.Head != "base" {
			t.Errorf("read back: %d turns, head %q; want %d turns, head %q", got, read.Head, want, "base")
		}
		if _, err := db.Image(ctx, SHA(Img(2))); err != nil {
			t.Errorf("reference image: %v", err)
		}
		if _, err := db.AddReference(ctx, keyA, Turn("ref"), Img(3)); err == nil {
			t.Error("AddReference with a turn id already there: got no error")
		}
		check(t, db)
	})
	t.Run("new conversation has no head", func(t *testing.T) {
		db := open(t, Options{})
		c, err := db.AddReference(ctx, keyB, Turn("ref"), Img(4))
		if err != nil {
			t.Fatalf("AddReference: %v", err)
		}
		if c.Head != "" || c.Current() != nil || len(c.Turns) != 1 {
			t.Errorf("got head %q and %d turns, want no head and 1 turn", c.Head, len(c.Turns))
		}
		check(t, db)
	})
	t.Run("errors", func(t *testing.T) {
		db := open(t, Options{})
		if _, err := db.AddReference(ctx, bot.ConvKey{}, Turn("x"), Img(1)); err == nil {
			t.Error("invalid key: got no error")
		}
		if _, err := db.AddReference(ctx, keyA, Turn("x"), nil); err == nil {
			t.Error("no bytes: got no error")
		}
	})
	t.Run("a referenced turn outlives the history limit", func(t *testing.T) {
		db := open(t, Options{History: 3})
		if _, err := db.AddTurn(ctx, keyA, Turn("a"), Img(10), nil, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := db.AddReference(ctx, keyA, Turn("r"), Img(11)); err != nil {
			t.Fatal(err)
		}
		e := Turn("e")
		e.Kind, e.Parent, e.Refs = bot.KindEdit, "a", []string{"r"}
		if _, err := db.AddTurn(ctx, keyA, e, Img(12), nil, nil); err != nil {
			t.Fatal(err)
		}
		ids := func() []string {
			t.Helper()
			c, err := db.Conversation(ctx, keyA)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, tt := range c.Turns {
				ids = append(ids, tt.ID)
			}
			return ids
		}
		// One turn more: a, older than r, is pruned; r is kept while e uses it.
		if _, err := db.AddTurn(ctx, keyA, Turn("t00"), Img(20), nil, nil); err != nil {
			t.Fatal(err)
		}
		if got, want := ids(), []string{"r", "e", "t00"}; !slices.Equal(got, want) {
			t.Errorf("turns: got %v, want %v", got, want)
		}
		if _, err := db.Image(ctx, SHA(Img(11))); err != nil {
			t.Errorf("referenced image: %v", err)
		}
		if got, want := refs(t, db, SHA(Img(11))), 1; got != want {
			t.Errorf("refcount of the referenced image: got %d, want %d", got, want)
		}
		if _, err := db.Image(ctx, SHA(Img(10))); !errors.Is(err, bot.ErrNotFound) {
			t.Errorf("pruned base image: got %v, want ErrNotFound", err)
		}
		// The next one prunes e, the oldest turn nothing refers to; the one
		// after that prunes r, which nothing uses any more.
		if _, err := db.AddTurn(ctx, keyA, Turn("t01"), Img(21), nil, nil); err != nil {
			t.Fatal(err)
		}
		if got, want := ids(), []string{"r", "t00", "t01"}; !slices.Equal(got, want) {
			t.Errorf("turns after one more: got %v, want %v", got, want)
		}
		if _, err := db.AddTurn(ctx, keyA, Turn("t02"), Img(22), nil, nil); err != nil {
			t.Fatal(err)
		}
		if got, want := ids(), []string{"t00", "t01", "t02"}; !slices.Equal(got, want) {
			t.Errorf("turns after two more: got %v, want %v", got, want)
		}
		if _, err := db.Image(ctx, SHA(Img(11))); !errors.Is(err, bot.ErrNotFound) {
			t.Errorf("reference image once no turn uses it: got %v, want ErrNotFound", err)
		}
		check(t, db)
	})
}

func testImageDedup(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	db := open(t, Options{History: 1})
	shared := Img(7)
	steps := []struct {
		name      string
		key       bot.ConvKey
		id        string
		data      []byte
		wantImgs  int
		wantRefs  int // of shared
		wantFound bool
	}{
		{"A adds the image", keyA, "a1", shared, 1, 1, true},
		{"B adds the same bytes", keyB, "b1", shared, 1, 2, true},
		{"A lets go", keyA, "a2", Img(8), 2, 1, true},
		{"B lets go", keyB, "b2", Img(9), 2, 0, false},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if _, err := db.AddTurn(ctx, s.key, Turn(s.id), s.data, nil, nil); err != nil {
				t.Fatal(err)
			}
			got := counts(t, db)
			if got.Images != s.wantImgs || got.ImageRefs != s.wantImgs {
				t.Errorf("images stored, with a count: got %d, %d; want %d", got.Images, got.ImageRefs, s.wantImgs)
			}
			if got := refs(t, db, SHA(shared)); got != s.wantRefs {
				t.Errorf("refcount: got %d, want %d", got, s.wantRefs)
			}
			_, err := db.Image(ctx, SHA(shared))
			if got := err == nil; got != s.wantFound {
				t.Errorf("shared image found: got %v (%v), want %v", got, err, s.wantFound)
			}
			check(t, db)
		})
	}
	t.Run("same bytes twice in one conversation", func(t *testing.T) {
		db := open(t, Options{History: 5})
		for _, id := range []string{"x", "y"} {
			if _, err := db.AddTurn(ctx, keyA, Turn(id), Img(10), nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := refs(t, db, SHA(Img(10))), 2; got != want {
			t.Errorf("refcount: got %d, want %d", got, want)
		}
		if got, want := counts(t, db).Images, 1; got != want {
			t.Errorf("images stored: got %d, want %d", got, want)
		}
		check(t, db)
	})
}

func testAddTurnAtomic(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	db := open(t, Options{Now: NewClock(t0).Now})
	job := &bot.Job{ID: "j1", Kind: bot.KindImagine, Conv: keyA, User: "u1", Prompt: "a cat", Model: "flux-kontext-pro",
		State: bot.JobDelivered, Result: "t1", Created: t0, Updated: t0, Origin: map[string]string{"channel": "chan1"}}
	charge := &bot.Charge{Platform: "discord", Workspace: "guildA", User: "u1", Model: "flux-kontext-pro", USD: 0.04, At: t0}

	t.Run("all land", func(t *testing.T) {
		if _, err := db.AddTurn(ctx, keyA, Turn("t1"), Img(1), job, charge); err != nil {
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
		_, err := db.AddTurn(ctx, keyA, Turn("t2"), Img(2), &bad, charge)
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
		if _, err := db.Image(ctx, SHA(Img(2))); !errors.Is(err, bot.ErrNotFound) {
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
		check(t, db)
	})
}

func testSetHead(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	clock := NewClock(t0)
	db := open(t, Options{Now: clock.Now})
	for i, id := range []string{"t1", "t2", "t3"} {
		if _, err := db.AddTurn(ctx, keyA, Turn(id), Img(i), nil, nil); err != nil {
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
			c, setErr := db.SetHead(ctx, tc.key, tc.id)
			if err := setErr; !errors.Is(err, tc.wantErr) {
				t.Fatalf("SetHead: got %v, want %v", err, tc.wantErr)
			}
			if setErr == nil {
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
			if setErr == nil && !reflect.DeepEqual(stored, c) {
				t.Errorf("read differs from returned:\ngot  %+v\nwant %+v", stored, c)
			}
		})
	}
}

// child is a turn made from parent (and from refs as further references).
func child(id, parent string, refs ...string) bot.Turn {
	t := Turn(id)
	t.Kind, t.Parent, t.Refs = bot.KindEdit, parent, refs
	return t
}

func testDeleteTurn(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	// Each case adds its turns in order (the last is the head), posts
	// each as message "m"+id, and then deletes the turns in del in order.
	type want struct {
		ids      []string // the conversation's turns after the last delete
		hidden   []string // which of them are hidden
		head     string
		images   []int // Img numbers still stored
		messages []string
	}
	tests := []struct {
		name    string
		build   []bot.Turn
		del     []string
		wantErr error
		want    want
	}{
		{"a leaf head goes and the head moves to its parent",
			[]bot.Turn{Turn("t1"), child("t2", "t1"), child("t3", "t2")}, []string{"t3"}, nil,
			want{ids: []string{"t1", "t2"}, head: "t2", images: []int{1, 2}, messages: []string{"mt1", "mt2"}}},
		{"a turn a later one was made from stays hidden with its image",
			[]bot.Turn{Turn("t1"), child("t2", "t1"), child("t3", "t2")}, []string{"t2"}, nil,
			want{ids: []string{"t1", "t2", "t3"}, hidden: []string{"t2"}, head: "t3", images: []int{1, 2, 3}, messages: []string{"mt1", "mt3"}}},
		{"a reference keeps a turn too",
			[]bot.Turn{Turn("t1"), Turn("t2"), child("t3", "t1", "t2")}, []string{"t2"}, nil,
			want{ids: []string{"t1", "t2", "t3"}, hidden: []string{"t2"}, head: "t3", images: []int{1, 2, 3}, messages: []string{"mt1", "mt3"}}},
		{"deleting the head skips a hidden parent",
			[]bot.Turn{Turn("t1"), child("t2", "t1"), child("t3", "t2"), child("t4", "t3")}, []string{"t3", "t4"}, nil,
			want{ids: []string{"t1", "t2"}, head: "t2", images: []int{1, 2}, messages: []string{"mt1", "mt2"}}},
		{"a hidden turn goes once nothing is made from it",
			[]bot.Turn{Turn("t1"), child("t2", "t1"), child("t3", "t2")}, []string{"t2", "t3"}, nil,
			want{ids: []string{"t1"}, head: "t1", images: []int{1}, messages: []string{"mt1"}}},
		{"a head that is not deleted stays",
			[]bot.Turn{Turn("t1"), child("t2", "t1"), child("t3", "t1")}, []string{"t2"}, nil,
			want{ids: []string{"t1", "t3"}, head: "t3", images: []int{1, 3}, messages: []string{"mt1", "mt3"}}},
		{"without an ancestor the head moves to the latest image shown",
			[]bot.Turn{Turn("t1"), child("t2", "t1"), Turn("t3")}, []string{"t3"}, nil,
			want{ids: []string{"t1", "t2"}, head: "t2", images: []int{1, 2}, messages: []string{"mt1", "mt2"}}},
		{"the last turn leaves an empty conversation",
			[]bot.Turn{Turn("t1")}, []string{"t1"}, nil,
			want{ids: []string{}, head: "", images: nil, messages: nil}},
		{"unknown turn",
			[]bot.Turn{Turn("t1")}, []string{"t9"}, bot.ErrNotFound,
			want{ids: []string{"t1"}, head: "t1", images: []int{1}, messages: []string{"mt1"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := NewClock(t0)
			db := open(t, Options{Now: clock.Now})
			for i, tt := range tc.build {
				if _, err := db.AddTurn(ctx, keyA, tt, Img(i+1), nil, nil); err != nil {
					t.Fatal(err)
				}
				if err := db.AddMessage(ctx, keyA, tt.ID, "m"+tt.ID); err != nil {
					t.Fatal(err)
				}
			}
			clock.Set(t0.Add(time.Hour))
			var c *bot.Conversation
			var err error
			for _, id := range tc.del {
				if c, err = db.DeleteTurn(ctx, keyA, id); err != nil {
					break
				}
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("DeleteTurn: got %v, want %v", err, tc.wantErr)
			}
			stored, serr := db.Conversation(ctx, keyA)
			switch {
			case len(tc.want.ids) == 0 && errors.Is(serr, bot.ErrNotFound):
				// An empty conversation is removed.
				stored = &bot.Conversation{Key: keyA, Turns: []bot.Turn{}, Updated: t0.Add(time.Hour)}
			case len(tc.want.ids) == 0:
				t.Errorf("empty conversation: got %v, %v; want bot.ErrNotFound", stored, serr)
			case serr != nil:
				t.Fatal(serr)
			}
			if got, want := counts(t, db).Conversations, min(len(tc.want.ids), 1); got != want {
				t.Errorf("conversations: got %d, want %d", got, want)
			}
			if err == nil && !reflect.DeepEqual(stored, c) {
				t.Errorf("read differs from returned:\ngot  %+v\nwant %+v", stored, c)
			}
			var ids, hidden []string
			ids = []string{}
			for _, tt := range stored.Turns {
				ids = append(ids, tt.ID)
				if tt.Hidden {
					hidden = append(hidden, tt.ID)
					if len(tt.Messages) != 0 {
						t.Errorf("hidden turn %s still lists messages %v", tt.ID, tt.Messages)
					}
				}
			}
			if got, want := ids, tc.want.ids; !slices.Equal(got, want) {
				t.Errorf("turns: got %v, want %v", got, want)
			}
			if got, want := hidden, tc.want.hidden; !slices.Equal(got, want) {
				t.Errorf("hidden: got %v, want %v", got, want)
			}
			if got, want := stored.Head, tc.want.head; got != want {
				t.Errorf("head: got %q, want %q", got, want)
			}
			if err == nil {
				if got, want := stored.Updated, t0.Add(time.Hour); !got.Equal(want) {
					t.Errorf("updated: got %v, want %v", got, want)
				}
			}
			for i := range tc.build {
				n := i + 1
				_, ierr := db.Image(ctx, SHA(Img(n)))
				if got, want := ierr == nil, slices.Contains(tc.want.images, n); got != want {
					t.Errorf("image %d stored: got %v (%v), want %v", n, got, ierr, want)
				}
			}
			for _, tt := range tc.build {
				m := "m" + tt.ID
				_, id, merr := db.Message(ctx, keyA, m)
				if got, want := merr == nil, slices.Contains(tc.want.messages, m); got != want {
					t.Errorf("message %s resolves: got %v (%q, %v), want %v", m, got, id, merr, want)
				}
			}
			if got, want := counts(t, db).Messages, len(tc.want.messages); got != want {
				t.Errorf("message records: got %d, want %d", got, want)
			}
			check(t, db)
		})
	}
	t.Run("a hidden turn made the head is shown again and stays the head", func(t *testing.T) {
		db := open(t, Options{})
		for i, tt := range []bot.Turn{Turn("t1"), child("t2", "t1"), child("t3", "t1")} {
			if _, err := db.AddTurn(ctx, keyA, tt, Img(i+1), nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.DeleteTurn(ctx, keyA, "t1"); err != nil {
			t.Fatal(err)
		}
		c, err := db.SetHead(ctx, keyA, "t1")
		if err != nil {
			t.Fatal(err)
		}
		if c.Turn("t1").Hidden {
			t.Error("t1 is still hidden after it was made the head")
		}
		// Deleting another turn leaves the head alone.
		if c, err = db.DeleteTurn(ctx, keyA, "t2"); err != nil {
			t.Fatal(err)
		}
		if got, want := c.Head, "t1"; got != want {
			t.Errorf("head: got %q, want %q", got, want)
		}
		check(t, db)
	})
	t.Run("unknown conversation", func(t *testing.T) {
		db := open(t, Options{})
		if _, err := db.DeleteTurn(ctx, keyB, "t1"); !errors.Is(err, bot.ErrNotFound) {
			t.Errorf("got %v, want bot.ErrNotFound", err)
		}
	})
}

// testDeleteTurnShared: an image another conversation (a thread started
// from it) or another turn still uses is kept when one turn goes.
func testDeleteTurnShared(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	db := open(t, Options{})
	thread := keyA
	thread.Thread = "th2"
	if _, err := db.AddTurn(ctx, keyA, Turn("t1"), Img(1), nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AddTurn(ctx, thread, Turn("t1"), Img(1), nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AddTurn(ctx, keyA, Turn("t2"), Img(1), nil, nil); err != nil {
		t.Fatal(err)
	}
	sha := SHA(Img(1))
	steps := []struct {
		name      string
		key       bot.ConvKey
		id        string
		wantRefs  int
		wantImage bool
	}{
		{"the thread's copy goes", thread, "t1", 2, true},
		{"a turn with the same bytes goes", keyA, "t2", 1, true},
		{"the last user goes", keyA, "t1", 0, false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if _, err := db.DeleteTurn(ctx, st.key, st.id); err != nil {
				t.Fatal(err)
			}
			if got, want := refs(t, db, sha), st.wantRefs; got != want {
				t.Errorf("refs: got %d, want %d", got, want)
			}
			if _, err := db.Image(ctx, sha); (err == nil) != st.wantImage {
				t.Errorf("image stored: got err %v, want stored %v", err, st.wantImage)
			}
			check(t, db)
		})
	}
}

func testMessages(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	db := open(t, Options{})
	// The same channel, thread and message ids in two workspaces.
	for _, k := range []bot.ConvKey{keyA, keyB} {
		for i, id := range []string{"t1", "t2"} {
			if _, err := db.AddTurn(ctx, k, Turn(id), Img(i), nil, nil); err != nil {
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
	t.Run("moves to another conversation of the workspace", func(t *testing.T) {
		other := bot.ConvKey{Platform: "discord", Workspace: "guildA", Channel: "chan2"}
		if _, err := db.AddTurn(ctx, other, Turn("o1"), Img(5), nil, nil); err != nil {
			t.Fatal(err)
		}
		if err := db.AddMessage(ctx, other, "o1", "100"); err != nil {
			t.Fatal(err)
		}
		k, id, err := db.Message(ctx, keyA, "100")
		if err != nil || k != other || id != "o1" {
			t.Errorf("Message after move: got %v %q, %v; want %v o1", k, id, err, other)
		}
		c, _ := db.Conversation(ctx, keyA)
		if got := c.Turn("t2").Messages; len(got) != 0 {
			t.Errorf("messages of the old turn after move: got %v, want none", got)
		}
		check(t, db)
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
		tt := Turn("t3")
		tt.Messages = []string{"300", "301"}
		c, err := db.AddTurn(ctx, keyA, tt, Img(3), nil, nil)
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
	check(t, db)
}

func testJobs(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	db := open(t, Options{})
	seed := func(id string, st bot.JobState, created time.Time) *bot.Job {
		return &bot.Job{ID: id, Kind: bot.KindEdit, Conv: keyA, User: "u1", UserName: "Ann", Prompt: "p " + id, Model: "m",
			Aspect: "1:1", Seed: 5, Base: "t1", FollowHead: true, Origin: map[string]string{"token": "x"},
			State: st, Created: created, Updated: created}
	}
	jobs := []*bot.Job{
		seed("j5", bot.JobSubmitted, t0.Add(2*time.Second)),
		seed("j4", bot.JobWaiting, t0.Add(time.Second)),
		seed("j3", bot.JobWaiting, t0.Add(time.Second)), // same Created as j4: ID decides
		seed("j2", bot.JobDelivered, t0),
		seed("j1", bot.JobWaiting, t0),
		seed("j0", bot.JobFailed, t0),
		seed("j6", bot.JobCanceled, t0),
		seed("j7", bot.JobPosting, t0.Add(3*time.Second)),
		// Nanoseconds apart: the order must not be lost to rounding.
		seed("j9", bot.JobWaiting, t0.Add(4*time.Second)),
		seed("j8", bot.JobWaiting, t0.Add(4*time.Second+time.Nanosecond)),
	}
	jobs[1].PredictionID = "pred-1"
	jobs[3].Result, jobs[5].Error = "t9", "provider said no"
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
		if got, want := liveIDs(t), []string{"j1", "j3", "j4", "j5", "j7", "j9", "j8"}; !slices.Equal(got, want) {
			t.Errorf("LiveJobs: got %v, want %v", got, want)
		}
	})
	t.Run("live jobs are whole", func(t *testing.T) {
		live, err := db.LiveJobs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, got := range live {
			for _, want := range jobs {
				if want.ID == got.ID && !reflect.DeepEqual(got, want) {
					t.Errorf("LiveJobs %s:\ngot  %+v\nwant %+v", got.ID, got, want)
				}
			}
		}
	})
	t.Run("replace", func(t *testing.T) {
		j := seed("j3", bot.JobDelivered, t0.Add(time.Second))
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
		if got, want := liveIDs(t), []string{"j1", "j4", "j5", "j7", "j9", "j8"}; !slices.Equal(got, want) {
			t.Errorf("LiveJobs after replace: got %v, want %v", got, want)
		}
	})
	t.Run("back to live", func(t *testing.T) {
		j := seed("j0", bot.JobWaiting, t0)
		if err := db.PutJob(ctx, j); err != nil {
			t.Fatal(err)
		}
		if got, want := liveIDs(t), []string{"j0", "j1", "j4", "j5", "j7", "j9", "j8"}; !slices.Equal(got, want) {
			t.Errorf("LiveJobs after a job went live again: got %v, want %v", got, want)
		}
	})
	if got, want := counts(t, db).Jobs, len(jobs); got != want {
		t.Errorf("jobs stored: got %d, want %d", got, want)
	}
	t.Run("none", func(t *testing.T) {
		db := open(t, Options{})
		live, err := db.LiveJobs(ctx)
		if err != nil || len(live) != 0 {
			t.Errorf("LiveJobs of an empty store: got %v, %v; want none", live, err)
		}
	})
}

func testUsage(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	db := open(t, Options{})
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
		if _, err := db.AddTurn(ctx, keyA, Turn(turnID(i)), Img(i), nil, ch); err != nil {
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

func testSweep(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	clock := NewClock(t0)
	db := open(t, Options{Now: clock.Now})
	old := bot.ConvKey{Platform: "discord", Workspace: "g", Channel: "old"}
	fresh := bot.ConvKey{Platform: "discord", Workspace: "g", Channel: "fresh"}
	shared := Img(50)

	// Old conversation, last touched at t0: 3 turns, one image shared with
	// the fresh conversation, 2 message mappings.
	for i, data := range [][]byte{Img(1), Img(2), shared} {
		ch := &bot.Charge{Platform: "discord", Workspace: "g", User: "u", USD: 1, At: t0}
		if _, err := db.AddTurn(ctx, old, Turn(turnID(i)), data, nil, ch); err != nil {
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
	for i, data := range [][]byte{shared, Img(3)} {
		if _, err := db.AddTurn(ctx, fresh, Turn(turnID(i)), data, nil, nil); err != nil {
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
		{"old-only image 1", func() error { _, err := db.Image(ctx, SHA(Img(1))); return err }, bot.ErrNotFound},
		{"old-only image 2", func() error { _, err := db.Image(ctx, SHA(Img(2))); return err }, bot.ErrNotFound},
		{"shared image", func() error { _, err := db.Image(ctx, SHA(shared)); return err }, nil},
		{"fresh image", func() error { _, err := db.Image(ctx, SHA(Img(3))); return err }, nil},
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
	t.Run("record counts", func(t *testing.T) {
		if got, want := counts(t, db), (Counts{Conversations: 1, Images: 2, ImageRefs: 2, Messages: 1, Jobs: 3}); got != want {
			t.Errorf("counts: got %+v, want %+v", got, want)
		}
		if got, want := refs(t, db, SHA(shared)), 1; got != want {
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
	t.Run("many in one pass", func(t *testing.T) {
		// More than any batch a backend is likely to use, so a batched
		// sweep must loop until done.
		db := open(t, Options{Now: clock.Now, History: 2})
		const n = 600
		for i := range n {
			k := bot.ConvKey{Platform: "slack", Workspace: "T", Channel: fmt.Sprintf("c%d", i)}
			if _, err := db.AddTurn(ctx, k, Turn("a"), Img(i%7), nil, nil); err != nil {
				t.Fatal(err)
			}
			if err := db.PutJob(ctx, &bot.Job{ID: fmt.Sprintf("j%d", i), State: bot.JobDelivered, Updated: t0}); err != nil {
				t.Fatal(err)
			}
		}
		st, err := db.Sweep(ctx, clock.Now().Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if want := (SweepStats{Conversations: n, Images: 7, Jobs: n}); st != want {
			t.Errorf("SweepStats: got %+v, want %+v", st, want)
		}
		if got := counts(t, db); got != (Counts{}) {
			t.Errorf("counts after sweeping everything: got %+v, want none", got)
		}
	})
	check(t, db)
}

func testClaim(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	clock := NewClock(t0)
	db := open(t, Options{Now: clock.Now})
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
	db = db.Reopen(t, Options{Now: clock.Now})
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
	if got := counts(t, db).Claims; got != 1 {
		t.Errorf("claims left after sweep: %d, want 1", got)
	}

	if _, err := db.Claim(ctx, "", time.Minute); err == nil {
		t.Error("Claim with an empty key: no error")
	}

	// A claim for no time (ttl 0) holds nothing: it asks whether key is
	// held (Slack marks a handled message so, after a shorter claim).
	const msg = "slack/T1/msg/done/1"
	for i, want := range []bool{true, true} {
		if got := claim(msg, 0); got != want {
			t.Errorf("probe %d of a free key: Claim(%q, 0) = %v, want %v", i+1, msg, got, want)
		}
	}
	if got := claim(msg, time.Hour); !got {
		t.Errorf("Claim(%q, 1h) after probes = false, want true: a probe holds nothing", msg)
	}
	if got := claim(msg, 0); got {
		t.Errorf("probe of a held key: Claim(%q, 0) = true, want false", msg)
	}
}

// testClaimConcurrent claims one key from many goroutines at once: exactly
// one is first.
func testClaimConcurrent(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	db := open(t, Options{})
	const n = 8
	var mu sync.Mutex
	firsts := 0
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			first, err := db.Claim(ctx, "slack/T1/event/Ev1", time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			if first {
				mu.Lock()
				firsts++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firsts != 1 {
		t.Errorf("first claimants among %d: got %d, want 1", n, firsts)
	}
}

// testConcurrent runs writers and readers at once; run it with -race.
func testConcurrent(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	db := open(t, Options{History: 5})
	const workers, each = 4, 15
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			key := bot.ConvKey{Platform: "discord", Workspace: "g", Channel: fmt.Sprintf("c%d", w)}
			for i := range each {
				id := turnID(i)
				if _, err := db.AddTurn(ctx, key, Turn(id), Img(i%3), nil,
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
	c := counts(t, db)
	// Each conversation keeps its last 5 turns, which cycle over 3 images.
	if got, want := c.Images, 3; got != want {
		t.Errorf("images: got %d, want %d", got, want)
	}
	if got, want := c.Messages, workers*5; got != want {
		t.Errorf("message mappings: got %d, want %d", got, want)
	}
	total := 0
	for i := range 3 {
		total += refs(t, db, SHA(Img(i)))
	}
	if got, want := total, workers*5; got != want {
		t.Errorf("total refcount: got %d, want %d (one per kept turn)", got, want)
	}
	check(t, db)
}

// testConcurrentOneConversation adds turns to one conversation from many
// goroutines at once, each with its job and charge: every turn lands once,
// none is lost to a concurrent writer, and the counts agree.
func testConcurrentOneConversation(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	db := open(t, Options{History: 4})
	const workers, each = 4, 6
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				tt := Turn(id)
				tt.Messages = []string{"m-" + id}
				job := &bot.Job{ID: "j-" + id, Conv: keyA, State: bot.JobDelivered, Result: id, Created: t0, Updated: t0}
				charge := &bot.Charge{Platform: "discord", Workspace: "guildA", User: "u", USD: 0.5, At: t0}
				c, err := db.AddTurn(ctx, keyA, tt, Img(w*100+i%2), job, charge)
				if err != nil {
					t.Error(err)
					return
				}
				if c.Head != id || c.Turn(id) == nil {
					t.Errorf("AddTurn %s returned head %q", id, c.Head)
				}
			}
		})
	}
	wg.Wait()
	c, err := db.Conversation(ctx, keyA)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(c.Turns), 4; got != want {
		t.Errorf("turns kept: got %d, want %d", got, want)
	}
	day, month, err := db.Usage(ctx, "discord", "guildA", "u", t0)
	if err != nil {
		t.Fatal(err)
	}
	if want := (bot.Usage{Images: workers * each, Spend: 0.5 * workers * each}); !usageEq(day, want) || !usageEq(month, want) {
		t.Errorf("usage: got %+v %+v, want %+v", day, month, want)
	}
	cnt := counts(t, db)
	if got, want := cnt.Jobs, workers*each; got != want {
		t.Errorf("jobs: got %d, want %d", got, want)
	}
	if got, want := cnt.Messages, 4; got != want {
		t.Errorf("message mappings (one per kept turn): got %d, want %d", got, want)
	}
	total := 0
	for w := range workers {
		for i := range 2 {
			total += refs(t, db, SHA(Img(w*100+i)))
		}
	}
	if got, want := total, 4; got != want {
		t.Errorf("total refcount: got %d, want %d (one per kept turn)", got, want)
	}
	check(t, db)
}

// Thumb returns small deterministic thumbnail bytes, distinct for each n.
func Thumb(n int) []byte { return []byte(fmt.Sprintf("\xff\xd8 fake thumbnail %d", n)) }

// thumbnail reads the thumbnail of sha; nil when the store says
// ErrNotFound. Any other error fails the test.
func thumbnail(t *testing.T, db Store, sha string) []byte {
	t.Helper()
	got, err := db.Thumbnail(context.Background(), sha)
	if errors.Is(err, bot.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("Thumbnail(%s): %v", sha, err)
	}
	if got == nil {
		t.Fatalf("Thumbnail(%s): nil bytes without ErrNotFound", sha)
	}
	return got
}

// testThumbnails: a thumbnail is stored for an image the store holds,
// replaced by a later put, absent (ErrNotFound) otherwise, kept across a
// restart and shared by every turn with the same bytes.
func testThumbnails(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	db := open(t, Options{})
	sha := SHA(Img(1))
	if got := thumbnail(t, db, sha); got != nil {
		t.Fatalf("thumbnail of an image never stored: got %q, want ErrNotFound", got)
	}
	if err := db.PutThumbnail(ctx, sha, Thumb(1)); !errors.Is(err, bot.ErrNotFound) {
		t.Errorf("PutThumbnail of an image the store does not hold: got %v, want ErrNotFound", err)
	}
	if got := counts(t, db).Thumbnails; got != 0 {
		t.Errorf("thumbnails stored without their image: got %d, want 0", got)
	}
	if _, err := db.AddTurn(ctx, keyA, Turn("t1"), Img(1), nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := thumbnail(t, db, sha); got != nil {
		t.Errorf("thumbnail before any put: got %q, want ErrNotFound", got)
	}
	if err := db.PutThumbnail(ctx, sha, nil); err == nil {
		t.Error("PutThumbnail with no bytes: got no error")
	}
	steps := []struct {
		name string
		data []byte
	}{
		{"put", Thumb(1)},
		{"put again replaces it", Thumb(2)},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := db.PutThumbnail(ctx, sha, st.data); err != nil {
				t.Fatal(err)
			}
			if got := thumbnail(t, db, sha); !slices.Equal(got, st.data) {
				t.Errorf("got %q, want %q", got, st.data)
			}
		})
	}
	// The same bytes in another conversation (a new thread from the
	// image) share the thumbnail.
	if _, err := db.AddTurn(ctx, keyB, Turn("b1"), Img(1), nil, nil); err != nil {
		t.Fatal(err)
	}
	db = db.Reopen(t, Options{})
	if got, want := thumbnail(t, db, sha), Thumb(2); !slices.Equal(got, want) {
		t.Errorf("after reopen: got %q, want %q", got, want)
	}
	if got := thumbnail(t, db, SHA(Img(2))); got != nil {
		t.Errorf("thumbnail of another image: got %q, want ErrNotFound", got)
	}
	if got, want := counts(t, db), (Counts{Conversations: 2, Images: 1, ImageRefs: 1, Thumbnails: 1}); got != want {
		t.Errorf("counts: got %+v, want %+v", got, want)
	}
	check(t, db)
}

// testThumbnailsGoWithImages: a thumbnail leaves the store exactly when
// its image does, whichever way the image goes (pruning past the
// history, DeleteTurn, the retention sweep), so none is left behind.
func testThumbnailsGoWithImages(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	late := t0.Add(48 * time.Hour)
	// put stores the turns' images with a thumbnail each.
	put := func(t *testing.T, db Store, key bot.ConvKey, ids []string, imgs []int) {
		t.Helper()
		for i, id := range ids {
			if _, err := db.AddTurn(ctx, key, Turn(id), Img(imgs[i]), nil, nil); err != nil {
				t.Fatal(err)
			}
			if err := db.PutThumbnail(ctx, SHA(Img(imgs[i])), Thumb(imgs[i])); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name string
		// run stores turns and removes some; the images 1..4 that stay
		// are kept.
		run  func(t *testing.T, db Store, clock *Clock)
		kept []int
	}{
		{
			name: "pruned past the history limit",
			run: func(t *testing.T, db Store, _ *Clock) {
				put(t, db, keyA, []string{"t1", "t2", "t3", "t4"}, []int{1, 2, 3, 4})
			},
			kept: []int{3, 4},
		},
		{
			name: "deleted",
			run: func(t *testing.T, db Store, _ *Clock) {
				put(t, db, keyA, []string{"t1", "t2"}, []int{1, 2})
				if _, err := db.DeleteTurn(ctx, keyA, "t2"); err != nil {
					t.Fatal(err)
				}
			},
			kept: []int{1},
		},
		{
			name: "the last conversation deleted",
			run: func(t *testing.T, db Store, _ *Clock) {
				put(t, db, keyA, []string{"t1"}, []int{1})
				if _, err := db.DeleteTurn(ctx, keyA, "t1"); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "kept while another conversation uses the bytes",
			run: func(t *testing.T, db Store, _ *Clock) {
				put(t, db, keyA, []string{"t1"}, []int{1})
				put(t, db, keyB, []string{"b1"}, []int{1})
				if _, err := db.DeleteTurn(ctx, keyA, "t1"); err != nil {
					t.Fatal(err)
				}
			},
			kept: []int{1},
		},
		{
			name: "swept",
			run: func(t *testing.T, db Store, clock *Clock) {
				put(t, db, keyA, []string{"t1", "t2"}, []int{1, 2})
				clock.Set(late)
				put(t, db, keyB, []string{"b1"}, []int{3})
				if _, err := db.Sweep(ctx, late.Add(-time.Hour)); err != nil {
					t.Fatal(err)
				}
			},
			kept: []int{3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := NewClock(t0)
			db := open(t, Options{History: 2, Now: clock.Now})
			tt.run(t, db, clock)
			for n := 1; n <= 4; n++ {
				sha := SHA(Img(n))
				_, imgErr := db.Image(ctx, sha)
				got := thumbnail(t, db, sha)
				want := slices.Contains(tt.kept, n)
				if (imgErr == nil) != want || (got != nil) != want {
					t.Errorf("image %d: image stored %v, thumbnail %q; want both stored: %v", n, imgErr == nil, got, want)
				}
				if want && !slices.Equal(got, Thumb(n)) {
					t.Errorf("image %d: thumbnail %q, want %q", n, got, Thumb(n))
				}
			}
			if got, want := counts(t, db).Thumbnails, len(tt.kept); got != want {
				t.Errorf("thumbnails stored: got %d, want %d", got, want)
			}
			// A thumbnail cannot come back for an image that went.
			if len(tt.kept) < 4 {
				gone := 0
				for n := 1; n <= 4 && gone == 0; n++ {
					if !slices.Contains(tt.kept, n) {
						gone = n
					}
				}
				if err := db.PutThumbnail(ctx, SHA(Img(gone)), Thumb(gone)); !errors.Is(err, bot.ErrNotFound) {
					t.Errorf("PutThumbnail of image %d after it went: got %v, want ErrNotFound", gone, err)
				}
			}
			check(t, db)
		})
	}
}
