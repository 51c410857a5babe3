package kontext

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"kontextbot/kontext/kontexttest"
)

// verifyNoLeaks checks, after every other cleanup of the test (the fake
// server's, the clients'), that no goroutine the test started is left.
func verifyNoLeaks(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// clientJob is a job that makes one image through c.
func clientJob(c *Client, id, user string, started *atomic.Int32) Job {
	return Job{ID: id, User: user, Run: func(ctx context.Context) error {
		if started != nil {
			started.Add(1)
		}
		_, err := c.Run(ctx, Request{Prompt: "job " + id, Seed: seed(1)})
		return err
	}}
}

// TestQueue429RetryKeepsSlot: a 429 means the provider's slot was not
// really free (another process uses the key); the job backs off and
// retries inside its own queue slot, and no other job takes that slot.
func TestQueue429RetryKeepsSlot(t *testing.T) {
	verifyNoLeaks(t)
	s := newFake(t, kontexttest.Options{})
	s.Inject(kontexttest.Create, kontexttest.Fault{Status: 429, RetryAfter: 150 * time.Millisecond},
		kontexttest.Fault{Status: 429, RetryAfter: 150 * time.Millisecond})
	c := newTestClient(t, s, nil)
	q := NewQueue(QueueOptions{Slots: 1})
	var startedB atomic.Int32
	a, err := q.Submit(context.Background(), clientJob(c, "a", "u1", nil))
	if err != nil {
		t.Fatal(err)
	}
	b, err := q.Submit(context.Background(), clientJob(c, "b", "u2", &startedB))
	if err != nil {
		t.Fatal(err)
	}
	// While a is backing off, its slot stays taken: b waits.
	for s.Stats().Creates < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	if st := q.Stats(); st.Running != 1 || st.Waiting != 1 || startedB.Load() != 0 {
		t.Errorf("during the retry: %+v, b started %d times; want a holding the slot and b waiting", st, startedB.Load())
	}
	<-a.Done()
	<-b.Done()
	if a.Err() != nil || b.Err() != nil {
		t.Fatalf("a: %v, b: %v", a.Err(), b.Err())
	}
	if st := s.Stats(); st.Creates != 4 || st.Injected429 != 2 || st.MaxActive != 1 {
		t.Errorf("provider saw %+v, want 4 creates (a three times, b once), 2 429s, 1 active at most", st)
	}
	q.Shutdown(context.Background())
}

// TestQueueSharedKey429: another process on the same key holds one of the
// provider's slots; the queue, configured for all of them, gets 429s and
// every job still succeeds, retrying in its own slot.
func TestQueueSharedKey429(t *testing.T) {
	verifyNoLeaks(t)
	s := newFake(t, kontexttest.Options{Slots: 2, Latency: 150 * time.Millisecond})
	c := newTestClient(t, s, func(c *Config) { c.MaxRetries = 20; c.RetryBase = 20 * time.Millisecond })
	other := newTestClient(t, s, nil) // the other process
	otherDone := make(chan error, 1)
	go func() {
		_, err := other.Run(context.Background(), Request{Prompt: "someone else's job", Seed: seed(9)})
		otherDone <- err
	}()
	for s.Stats().Active == 0 {
		time.Sleep(2 * time.Millisecond)
	}
	q := NewQueue(QueueOptions{Slots: 2, UserRunning: 2})
	var tickets []*Ticket
	for _, id := range []string{"a", "b", "c", "d"} {
		tk, err := q.Submit(context.Background(), clientJob(c, id, "u-"+id, nil))
		if err != nil {
			t.Fatal(err)
		}
		tickets = append(tickets, tk)
	}
	for _, tk := range tickets {
		<-tk.Done()
		if err := tk.Err(); err != nil {
			t.Errorf("job: %v", err)
		}
	}
	if err := <-otherDone; err != nil {
		t.Errorf("the other process's job: %v", err)
	}
	if st := s.Stats(); st.SlotLimit429 == 0 || st.MaxActive != 2 || st.Succeeded != 5 {
		t.Errorf("provider saw %+v, want some 429s, never more than 2 active, 5 images", st)
	}
	q.Shutdown(context.Background())
}

// TestQueueCancelRunningCancelsPrediction: cancelling a running job cancels
// its prediction at the provider and frees the slot at once.
func TestQueueCancelRunningCancelsPrediction(t *testing.T) {
	verifyNoLeaks(t)
	s := newFake(t, kontexttest.Options{Latency: 10 * time.Second})
	c := newTestClient(t, s, func(c *Config) { c.Wait = -1 })
	q := NewQueue(QueueOptions{Slots: 1})
	tk, err := q.Submit(context.Background(), clientJob(c, "a", "u", nil))
	if err != nil {
		t.Fatal(err)
	}
	for s.Stats().Active == 0 {
		time.Sleep(2 * time.Millisecond)
	}
	tk.Cancel()
	select {
	case <-tk.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("the cancelled job did not end")
	}
	if !errors.Is(tk.Err(), ErrCanceled) {
		t.Errorf("err: got %v, want ErrCanceled", tk.Err())
	}
	if st := q.Stats(); st.Running != 0 {
		t.Errorf("slot still held: %+v", st)
	}
	c.Close()
	if st := s.Stats(); st.Cancels != 1 || st.Canceled != 1 || st.Active != 0 {
		t.Errorf("provider saw %+v, want the prediction cancelled", st)
	}
	q.Shutdown(context.Background())
}

// TestCancelDuringCreate: the job ends while the create is in flight,
// after the provider has made the prediction but before its answer
// arrived. The create is not cut short (its id would be lost with a paid
// prediction running); once it answers, the prediction is recorded, and
// cancelled unless the process is shutting down (then the next process
// follows it by id). Nothing is created twice.
func TestCancelDuringCreate(t *testing.T) {
	for _, tc := range []struct {
		name        string
		cause       error
		wantCancels int
	}{
		{"CancelledByAPerson", nil, 1},
		{"Shutdown", ErrShutdown, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			verifyNoLeaks(t)
			s := newFake(t, kontexttest.Options{Latency: 10 * time.Second})
			s.Inject(kontexttest.Create, kontexttest.Fault{SlowAnswer: 300 * time.Millisecond})
			c := newTestClient(t, s, func(c *Config) { c.Wait = -1 })
			ctx, cancel := context.WithCancelCause(context.Background())
			var recorded atomic.Value
			done := make(chan error, 1)
			go func() {
				_, err := c.Run(ctx, Request{Prompt: "a fox", OnCreated: func(id string) { recorded.Store(id) }})
				done <- err
			}()
			for s.Stats().Created == 0 {
				time.Sleep(2 * time.Millisecond)
			}
			cancel(tc.cause) // the prediction exists; its answer is on the way
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run: got %v, want context.Canceled", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not end after the cancel")
			}
			if id, _ := recorded.Load().(string); id == "" {
				t.Error("OnCreated was not called: the prediction's id was lost")
			}
			c.Close() // waits for the background cancel
			if st := s.Stats(); st.Creates != 1 || st.Cancels != tc.wantCancels {
				t.Errorf("provider saw %d creates and %d cancels, want 1 and %d", st.Creates, st.Cancels, tc.wantCancels)
			}
		})
	}
}
