package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
	"kontextbot/store/postgres"
	"kontextbot/store/postgres/pgtest"
)

// The bot's wiring of the shared queue, tested as several replicas would
// run it: each replica is a bot.Core with its own pool, client and
// postgres.Scheduler, all on one schema and one fake provider.

// ledger is what every replica's chat showed, by job id.
type ledger struct {
	mu        sync.Mutex
	delivered map[string][]string // replicas that posted the job's image
	prompts   map[string][]string // prompt each posted image was made from (its provenance)
	failed    map[string][]string // messages
	positions map[string][]int    // places in line told
	started   []string            // jobs in the order they reached the provider (Running)
	submitted map[string]string   // job id → replica it was submitted on
}

func newLedger() *ledger {
	return &ledger{delivered: map[string][]string{}, prompts: map[string][]string{}, failed: map[string][]string{},
		positions: map[string][]int{}, submitted: map[string]string{}}
}

// recorder is one replica's chat platform. Once dead (its process
// killed) it shows nothing and posts nothing.
type recorder struct {
	name string
	l    *ledger
	dead atomic.Bool
	// gate, when set, may return a channel a delivery waits on.
	gate func(j *bot.Job) <-chan struct{}
	// runGate, when set, may return a channel a job waits on as it
	// starts, before its create: it holds its slot meanwhile.
	runGate func(j *bot.Job) <-chan struct{}
}

func (r *recorder) Name() string                   { return "test" }
func (r *recorder) Reporter(*bot.Job) bot.Reporter { return r }

func (r *recorder) Queued(j *bot.Job, pos int) {
	if r.dead.Load() {
		return
	}
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	r.l.positions[j.ID] = append(r.l.positions[j.ID], pos)
}

func (r *recorder) Running(j *bot.Job) {
	if r.dead.Load() {
		return
	}
	r.l.mu.Lock()
	r.l.started = append(r.l.started, j.ID)
	r.l.mu.Unlock()
	if r.runGate != nil {
		if ch := r.runGate(j); ch != nil {
			<-ch
		}
	}
}

var errDead = errors.New("the replica is dead")

func (r *recorder) Deliver(_ context.Context, j *bot.Job, d *bot.Delivery) (bot.Posted, error) {
	if r.gate != nil {
		if ch := r.gate(j); ch != nil {
			<-ch
		}
	}
	if r.dead.Load() {
		return bot.Posted{}, errDead
	}
	p, err := kontexttest.ReadProvenance(d.Image)
	if err != nil {
		return bot.Posted{}, err
	}
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	r.l.delivered[j.ID] = append(r.l.delivered[j.ID], r.name)
	r.l.prompts[j.ID] = append(r.l.prompts[j.ID], p.Prompt)
	return bot.Posted{MessageID: r.name + "-" + j.ID}, nil
}

func (r *recorder) Fail(_ context.Context, j *bot.Job, msg string) {
	if r.dead.Load() {
		return
	}
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	r.l.failed[j.ID] = append(r.l.failed[j.ID], msg)
}

// replica is one process of the bot.
type replica struct {
	name   string
	db     *postgres.DB
	client *kontext.Client
	sched  *postgres.Scheduler
	core   *bot.Core
	rec    *recorder
	down   bool
}

// cluster is the replicas over one schema and one fake provider.
type cluster struct {
	t    *testing.T
	url  string
	fake *kontexttest.Server
	opts postgres.QueueOptions
	l    *ledger
	reps []*replica
	// wait is the clients' kontext.Config.Wait: -1 (the default here)
	// polls; a positive value holds the create until the image is done.
	wait time.Duration
}

var prices = map[string]float64{kontext.ModelMax: 0.08, kontext.ModelPro: 0.04}

func newCluster(t *testing.T, n int, opts postgres.QueueOptions, fake kontexttest.Options) *cluster {
	t.Helper()
	fake.APIKey = "k"
	if fake.Pixels == 0 {
		fake.Pixels = 64 * 64
	}
	c := &cluster{t: t, url: pgtest.Schema(t), fake: kontexttest.NewServer(fake), opts: opts, l: newLedger(), wait: -1}
	for i := range n {
		c.reps = append(c.reps, c.open(fmt.Sprintf("r%d", i)))
	}
	t.Cleanup(func() {
		for _, r := range c.reps {
			c.stop(r)
		}
		c.fake.Close()
	})
	return c
}

// open starts a replica; its scheduler starts with Recover (call start).
func (c *cluster) open(name string) *replica {
	c.t.Helper()
	db, err := postgres.Open(context.Background(), c.url, postgres.Options{})
	if err != nil {
		c.t.Fatal(err)
	}
	client, err := kontext.NewClient(kontext.Config{BaseURL: c.fake.URL, APIKey: "k", Wait: c.wait,
		PollInterval: 10 * time.Millisecond, MaxPollInterval: 20 * time.Millisecond, RetryBase: 5 * time.Millisecond})
	if err != nil {
		c.t.Fatal(err)
	}
	r := &replica{name: name, db: db, client: client, sched: db.Scheduler(name, c.opts), rec: &recorder{name: name, l: c.l}}
	r.core = bot.New(bot.Config{Prices: prices}, db, client, r.sched)
	r.core.Register(r.rec)
	return r
}

// start registers nothing more and starts the replica's share of the queue.
func (c *cluster) start(r *replica) {
	c.t.Helper()
	if _, err := r.core.Recover(context.Background()); err != nil {
		c.t.Fatal(err)
	}
}

// stop is SIGTERM: the replica hands its unfinished jobs over at once.
func (c *cluster) stop(r *replica) {
	if r.down {
		return
	}
	r.down = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.core.Close(ctx); err != nil {
		c.t.Errorf("close %s: %v", r.name, err)
	}
	r.client.Close()
	r.db.Close()
}

// kill is SIGKILL as seen from outside: the replica's chat shows nothing
// more, its connections are gone (no renewal, no release, no handover),
// and its goroutines are then stopped so the test leaks none.
func (c *cluster) kill(r *replica, beforeStop func()) {
	r.down = true
	r.rec.dead.Store(true)
	r.db.Close()
	if beforeStop != nil {
		beforeStop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = r.core.Close(ctx) // its database is gone: handing over fails, as after a crash
	r.client.Close()
}

func (c *cluster) submit(r *replica, user, prompt string) *bot.Job {
	c.t.Helper()
	j, err := r.core.Submit(context.Background(), &bot.Request{Kind: bot.KindImagine,
		Conv: bot.ConvKey{Platform: "test", Workspace: "w", Channel: "c-" + prompt}, User: user, Prompt: prompt})
	if err != nil {
		c.t.Fatalf("Submit %s on %s: %v", prompt, r.name, err)
	}
	c.l.mu.Lock()
	c.l.submitted[j.ID] = r.name
	c.l.mu.Unlock()
	return j
}

// waitEnded waits until every job in ids was delivered or failed and is
// recorded as ended in the store.
func (c *cluster) waitEnded(db *postgres.DB, ids []string, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := 0
		for _, id := range ids {
			j, err := db.Job(context.Background(), id)
			if err != nil {
				c.t.Fatal(err)
			}
			if j.State.Live() {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%d of %d jobs still live after %s", left, len(ids), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkOnce checks that each job was delivered exactly once, with its own
// prompt, never failed, and charged once: the workspace's month holds one
// image per job.
func (c *cluster) checkOnce(db *postgres.DB, jobs []*bot.Job) {
	c.t.Helper()
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	for _, j := range jobs {
		if got := c.l.delivered[j.ID]; len(got) != 1 {
			c.t.Errorf("job %s (%s): delivered by %v, want exactly once", j.ID, j.Prompt, got)
		}
		if got := c.l.prompts[j.ID]; len(got) > 0 && got[0] != j.Prompt {
			c.t.Errorf("job %s: image made from %q, want %q", j.ID, got[0], j.Prompt)
		}
		if f := c.l.failed[j.ID]; len(f) > 0 {
			c.t.Errorf("job %s: failed %v", j.ID, f)
		}
		sj, err := db.Job(context.Background(), j.ID)
		if err != nil || sj.State != bot.JobDelivered {
			c.t.Errorf("job %s in the store: %v, %v; want delivered", j.ID, sj, err)
		}
	}
	_, month, err := db.Usage(context.Background(), "test", "w", "", time.Now())
	if err != nil {
		c.t.Fatal(err)
	}
	if month.Images != len(jobs) {
		c.t.Errorf("images charged: got %d, want %d (one per job)", month.Images, len(jobs))
	}
}

// TestReplicasShareSlots: 3 replicas, 10 people submitting concurrently on
// all of them: the provider never sees more than its 6 slots (no 429),
// every slot gets used, every job is created once, delivered once and
// charged once, and the work is spread over the replicas.
func TestReplicasShareSlots(t *testing.T) {
	const users, perUser = 10, 6
	c := newCluster(t, 3, postgres.QueueOptions{Slots: 6, UserRunning: 2, UserWaiting: perUser, MaxWaiting: 1000, Lease: 5 * time.Second},
		kontexttest.Options{Latency: 60 * time.Millisecond, Jitter: 60 * time.Millisecond})
	for _, r := range c.reps {
		c.start(r)
	}
	// The database's view of the slots, sampled while the work runs.
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	var maxRunning atomic.Int32
	var sampling sync.WaitGroup
	sampling.Go(func() {
		for sampleCtx.Err() == nil {
			if st, err := c.reps[0].sched.Queue().Stats(sampleCtx); err == nil && int32(st.Running) > maxRunning.Load() {
				maxRunning.Store(int32(st.Running))
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	var mu sync.Mutex
	var jobs []*bot.Job
	var wg sync.WaitGroup
	for u := range users {
		wg.Go(func() {
			for i := range perUser {
				j := c.submit(c.reps[(u+i)%3], fmt.Sprintf("user%d", u), fmt.Sprintf("u%d-%d", u, i))
				mu.Lock()
				jobs = append(jobs, j)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.ID
	}
	c.waitEnded(c.reps[0].db, ids, 60*time.Second)
	stopSampling()
	sampling.Wait()
	c.checkOnce(c.reps[0].db, jobs)
	st := c.fake.Stats()
	if st.Creates != users*perUser {
		t.Errorf("creates: got %d, want %d", st.Creates, users*perUser)
	}
	if st.MaxActive > 6 {
		t.Errorf("provider's max active: got %d, want at most 6", st.MaxActive)
	}
	if got := maxRunning.Load(); got != 6 {
		t.Errorf("most slots in use at once, as the database saw it: got %d, want 6 (all used, never more)", got)
	}
	if st.SlotLimit429 != 0 || st.Injected429 != 0 {
		t.Errorf("429s: got %d, want none", st.SlotLimit429)
	}
	c.l.mu.Lock()
	by := map[string]int{}
	for _, rs := range c.l.delivered {
		by[rs[0]]++
	}
	c.l.mu.Unlock()
	if len(by) < 2 {
		t.Errorf("deliveries by replica: %v, want the work shared", by)
	}
	for _, u := range []int{0, users - 1} {
		day, _, err := c.reps[1].db.Usage(context.Background(), "test", "w", fmt.Sprintf("user%d", u), time.Now())
		if err != nil || day.Images != perUser {
			t.Errorf("user%d charged %d images today (%v), want %d", u, day.Images, err, perUser)
		}
	}
	stats, err := c.reps[2].sched.Queue().Stats(context.Background())
	if err != nil || stats.Running != 0 || stats.Waiting != 0 {
		t.Errorf("shared queue at the end: %+v, %v; want empty", stats, err)
	}
}

// TestReplicasRoundRobinAndPositions: one slot; a heavy user's batch on r0
// and light users' jobs on r1 and r2 are served in turns, and the places
// in line each replica tells count the jobs of the other replicas. A
// cancel on one replica removes a job another replica accepted.
func TestReplicasRoundRobinAndPositions(t *testing.T) {
	c := newCluster(t, 3, postgres.QueueOptions{Slots: 1, UserRunning: 1, UserWaiting: 10, Lease: 5 * time.Second},
		kontexttest.Options{Latency: 100 * time.Millisecond})
	r0, r1, r2 := c.reps[0], c.reps[1], c.reps[2]
	// The blocker holds the slot until every job below is queued.
	release := make(chan struct{})
	var releaseOnce sync.Once
	open := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(open) // before the replicas stop, if the test ends early
	for _, r := range c.reps {
		r.rec.runGate = func(j *bot.Job) <-chan struct{} {
			if j.Prompt == "blocker" {
				return release
			}
			return nil
		}
		c.start(r)
	}
	blocker := c.submit(r2, "blocker", "blocker")
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.l.mu.Lock()
		running := slices.Contains(c.l.started, blocker.ID)
		c.l.mu.Unlock()
		if running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the blocker never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var heavy []*bot.Job
	for i := range 4 {
		heavy = append(heavy, c.submit(r0, "heavy", fmt.Sprintf("heavy%d", i)))
	}
	light0 := c.submit(r1, "light", "light0")
	other0 := c.submit(r2, "other", "other0")
	light1 := c.submit(r1, "light", "light1")
	doomed := c.submit(r0, "doomed", "doomed")

	t.Run("cancel from another replica", func(t *testing.T) {
		if err := r1.core.Cancel(context.Background(), doomed.ID, "mallory"); !errors.Is(err, bot.ErrNotYours) {
			t.Errorf("someone else's cancel: got %v, want ErrNotYours", err)
		}
		if err := r1.core.Cancel(context.Background(), doomed.ID, "doomed"); err != nil {
			t.Fatalf("cancel on r1 of a job accepted on r0: %v", err)
		}
		j, err := r2.db.Job(context.Background(), doomed.ID)
		if err != nil || j.State != bot.JobCanceled {
			t.Errorf("cancelled job in the store: %+v, %v; want canceled", j, err)
		}
		if err := r2.core.Cancel(context.Background(), blocker.ID, "blocker"); !errors.Is(err, bot.ErrJobGone) {
			t.Errorf("cancel of a running job: got %v, want ErrJobGone", err)
		}
	})

	order := []*bot.Job{heavy[0], light0, other0, heavy[1], light1, heavy[2], heavy[3]}
	// Every replica tells its own jobs their place, counting the others'.
	deadline = time.Now().Add(20 * time.Second)
	for {
		c.l.mu.Lock()
		ok := true
		for i, j := range order {
			p := c.l.positions[j.ID]
			if len(p) == 0 || p[len(p)-1] != i+1 {
				ok = false
			}
		}
		got := map[string][]int{}
		for _, j := range order {
			got[j.Prompt] = slices.Clone(c.l.positions[j.ID])
		}
		c.l.mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("places in line told: %v; want the last of each to be its place in %v", got, []string{"heavy0", "light0", "other0", "heavy1", "light1", "heavy2", "heavy3"})
		}
		time.Sleep(10 * time.Millisecond)
	}
	open()
	ids := []string{blocker.ID}
	for _, j := range order {
		ids = append(ids, j.ID)
	}
	c.waitEnded(r0.db, ids, 60*time.Second)
	c.checkOnce(r0.db, append([]*bot.Job{blocker}, order...))
	c.l.mu.Lock()
	started := slices.Clone(c.l.started)
	c.l.mu.Unlock()
	want := ids
	if !slices.Equal(started, want) {
		name := map[string]string{}
		for _, j := range append([]*bot.Job{blocker, doomed}, order...) {
			name[j.ID] = j.Prompt
		}
		var got []string
		for _, id := range started {
			got = append(got, name[id])
		}
		t.Errorf("start order: got %v, want [blocker heavy0 light0 other0 heavy1 light1 heavy2 heavy3]", got)
	}
	if st := c.fake.Stats(); st.Creates != len(ids) {
		t.Errorf("creates: got %d, want %d (the cancelled job never created)", st.Creates, len(ids))
	}
}

// waitState waits until job id is in state in the store.
func waitState(t *testing.T, db *postgres.DB, id string, state bot.JobState) *bot.Job {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		j, err := db.Job(context.Background(), id)
		if err == nil && j.State == state {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: got %+v, %v; want state %s", id, j, err, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReplicaKilledJobsTakenOver kills a replica that runs jobs in every
// state: one stored but not yet posted (its prediction final, its slot
// given back), six whose predictions the provider is making, four
// waiting. Its leases lapse and the other
// replicas take everything over: the stored image is posted, the
// predictions are followed by id (the provider sees exactly one create
// per job), the waiting jobs run; each job is delivered and charged once.
func TestReplicaKilledJobsTakenOver(t *testing.T) {
	c := newCluster(t, 3, postgres.QueueOptions{Slots: 6, UserRunning: 6, UserWaiting: 10, Lease: time.Second},
		kontexttest.Options{Latency: 1500 * time.Millisecond})
	victim := c.reps[0]
	unblock := make(chan struct{})
	var unblockOnce sync.Once
	open := func() { unblockOnce.Do(func() { close(unblock) }) }
	t.Cleanup(open)
	victim.rec.gate = func(j *bot.Job) <-chan struct{} {
		if j.Prompt == "posted-late" {
			return unblock
		}
		return nil
	}
	c.start(victim) // alone at first: every job below is the victim's

	p := c.submit(victim, "pat", "posted-late")
	waitState(t, victim.db, p.ID, bot.JobPosting)
	var submitted, waiting []*bot.Job
	for i := range 6 {
		submitted = append(submitted, c.submit(victim, fmt.Sprintf("s%d", i), fmt.Sprintf("submitted%d", i)))
	}
	for _, j := range submitted {
		if sj := waitState(t, victim.db, j.ID, bot.JobSubmitted); sj.PredictionID == "" {
			t.Fatalf("job %s submitted without a prediction id", j.ID)
		}
	}
	for i := range 4 {
		waiting = append(waiting, c.submit(victim, fmt.Sprintf("w%d", i), fmt.Sprintf("waiting%d", i)))
	}
	if st, err := victim.sched.Queue().Stats(context.Background()); err != nil || st.Running != 6 || st.Waiting != 4 {
		t.Fatalf("before the kill: %+v, %v; want 6 running, 4 waiting", st, err)
	}
	for _, r := range c.reps[1:] {
		c.start(r)
	}
	c.kill(victim, open)

	all := append(append([]*bot.Job{p}, submitted...), waiting...)
	var ids []string
	for _, j := range all {
		ids = append(ids, j.ID)
	}
	c.waitEnded(c.reps[1].db, ids, 60*time.Second)
	c.checkOnce(c.reps[1].db, all)
	c.l.mu.Lock()
	for _, j := range all {
		if rs := c.l.delivered[j.ID]; len(rs) == 1 && rs[0] == victim.name {
			t.Errorf("job %s delivered by the dead replica", j.Prompt)
		}
	}
	c.l.mu.Unlock()
	st := c.fake.Stats()
	if st.Creates != len(all) {
		t.Errorf("creates: got %d, want %d (taken-over predictions followed, not made again)", st.Creates, len(all))
	}
	if st.MaxActive > 6 || st.SlotLimit429 != 0 {
		t.Errorf("provider: max active %d, %d 429s; want at most 6 and none", st.MaxActive, st.SlotLimit429)
	}
	if st.Cancels != 0 {
		t.Errorf("cancels: got %d, want 0 (a dead replica's predictions are followed, not cancelled)", st.Cancels)
	}
}

// TestReplicaStopHandsOver: a replica stopped as on SIGTERM hands its
// running jobs over long before its lease (a minute) would lapse: another
// replica follows their predictions and delivers each once. Polling, the
// prediction ids are stored and the jobs are handed over at once; with
// Prefer: wait the create requests are in flight, and a stop must not cut
// them short (the prediction exists, its id not yet known): they finish,
// and no prediction is created twice.
func TestReplicaStopHandsOver(t *testing.T) {
	for _, tc := range []struct {
		name string
		wait time.Duration
	}{
		{"polling", -1},
		{"creating", 30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 0, postgres.QueueOptions{Slots: 6, UserRunning: 6, Lease: time.Minute},
				kontexttest.Options{Latency: 800 * time.Millisecond})
			c.wait = tc.wait
			c.reps = []*replica{c.open("r0"), c.open("r1")}
			r0, r1 := c.reps[0], c.reps[1]
			c.start(r0)
			var jobs []*bot.Job
			for i := range 3 {
				jobs = append(jobs, c.submit(r0, fmt.Sprintf("u%d", i), fmt.Sprintf("handed%d", i)))
			}
			if tc.wait < 0 {
				for _, j := range jobs {
					waitState(t, r0.db, j.ID, bot.JobSubmitted)
				}
			} else {
				for deadline := time.Now().Add(10 * time.Second); c.fake.Stats().Active < len(jobs); time.Sleep(5 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatal("the creates never reached the provider")
					}
				}
			}
			c.start(r1)
			c.stop(r0)
			var ids []string
			for _, j := range jobs {
				ids = append(ids, j.ID)
			}
			c.waitEnded(r1.db, ids, 20*time.Second) // far less than the lease
			c.checkOnce(r1.db, jobs)
			if st := c.fake.Stats(); st.Creates != len(jobs) || st.Cancels != 0 || st.SlotLimit429 != 0 {
				t.Errorf("provider: %d creates, %d cancels, %d 429s; want %d, 0, 0", st.Creates, st.Cancels, st.SlotLimit429, len(jobs))
			}
		})
	}
}

// TestReplicasRecoverOrphansOnce: jobs stored but in no queue (a process
// died between accepting a job and queueing it, or its post failed) are
// queued again by the Recover of replicas starting together, and each runs
// and is delivered exactly once.
func TestReplicasRecoverOrphansOnce(t *testing.T) {
	c := newCluster(t, 3, postgres.QueueOptions{Slots: 6, UserRunning: 6, UserWaiting: 20, Lease: 5 * time.Second},
		kontexttest.Options{Latency: 50 * time.Millisecond})
	ctx := context.Background()
	var jobs []*bot.Job
	now := time.Now()
	for i := range 8 {
		j := &bot.Job{ID: fmt.Sprintf("jorphan%d", i), Kind: bot.KindImagine,
			Conv: bot.ConvKey{Platform: "test", Workspace: "w", Channel: fmt.Sprintf("c%d", i)},
			User: fmt.Sprintf("u%d", i), Prompt: fmt.Sprintf("orphan %d", i), Model: kontext.ModelMax,
			Seed: int64(i), State: bot.JobWaiting, Created: now, Updated: now}
		if err := c.reps[0].db.PutJob(ctx, j); err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	var wg sync.WaitGroup
	recovered := make([][]string, len(c.reps))
	for i, r := range c.reps {
		wg.Go(func() {
			ids, err := r.core.Recover(ctx)
			if err != nil {
				t.Error(err)
			}
			recovered[i] = ids
		})
	}
	wg.Wait()
	n := 0
	for _, ids := range recovered {
		n += len(ids)
	}
	if n < len(jobs) {
		t.Errorf("recovered %v, want every orphan queued", recovered)
	}
	var ids []string
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	c.waitEnded(c.reps[2].db, ids, 30*time.Second)
	c.checkOnce(c.reps[2].db, jobs)
	if st := c.fake.Stats(); st.Creates != len(jobs) {
		t.Errorf("creates: got %d, want %d", st.Creates, len(jobs))
	}
}

// TestReplicasAdoptJobsNeverQueued: jobs a replica stored and then died
// before it queued them (killed inside Submit) are in no queue, so no
// takeover finds them, and no replica restarts to Recover them. The
// running replicas' Adopt queues those that have not changed for a while,
// each exactly once however many replicas adopt at the same time; a job
// stored just now (its Submit may still be queueing it) is left alone.
func TestReplicasAdoptJobsNeverQueued(t *testing.T) {
	c := newCluster(t, 3, postgres.QueueOptions{Slots: 6, UserRunning: 6, UserWaiting: 20, Lease: 5 * time.Second},
		kontexttest.Options{Latency: 50 * time.Millisecond})
	ctx := context.Background()
	for _, r := range c.reps {
		c.start(r)
	}
	put := func(id string, updated time.Time) *bot.Job {
		j := &bot.Job{ID: id, Kind: bot.KindImagine, Conv: bot.ConvKey{Platform: "test", Workspace: "w", Channel: "c-" + id},
			User: "u-" + id, Prompt: "prompt " + id, Model: kontext.ModelMax, State: bot.JobWaiting, Created: updated, Updated: updated}
		if err := c.reps[0].db.PutJob(ctx, j); err != nil {
			t.Fatal(err)
		}
		return j
	}
	var stale []*bot.Job
	var staleIDs []string
	for i := range 4 {
		j := put(fmt.Sprintf("jstale%d", i), time.Now().Add(-time.Minute))
		stale, staleIDs = append(stale, j), append(staleIDs, j.ID)
	}
	fresh := put("jfresh", time.Now())
	// A replica whose platforms are not registered yet (before Recover)
	// adopts nothing: it would run the jobs with no one to post them.
	early := c.open("r-early")
	c.reps = append(c.reps, early)
	if ids, err := early.core.Adopt(ctx, 30*time.Second); err != nil || len(ids) != 0 {
		t.Errorf("adopted before Recover: %v, %v; want nothing", ids, err)
	}
	var wg sync.WaitGroup
	adopted := make([][]string, 3)
	for i, r := range c.reps[:3] {
		wg.Go(func() {
			ids, err := r.core.Adopt(ctx, 30*time.Second)
			if err != nil {
				t.Error(err)
			}
			adopted[i] = ids
		})
	}
	wg.Wait()
	var all []string
	for _, ids := range adopted {
		all = append(all, ids...)
	}
	slices.Sort(all)
	if !slices.Equal(all, staleIDs) {
		t.Errorf("adopted %v, want each of %v once", adopted, staleIDs)
	}
	c.waitEnded(c.reps[1].db, staleIDs, 30*time.Second)
	c.checkOnce(c.reps[1].db, stale)
	if j, err := c.reps[1].db.Job(ctx, fresh.ID); err != nil || j.State != bot.JobWaiting {
		t.Errorf("the fresh job: %+v, %v; want it left waiting for its own Submit", j, err)
	}
}

// TestReplicaStoppingQueuesForOthers: a replica that is stopping (SIGTERM:
// its core closed, its platforms still connected for a moment) still
// takes the requests that reach it: they are queued in the shared queue
// and another replica runs them, instead of the person being told the bot
// is restarting.
func TestReplicaStoppingQueuesForOthers(t *testing.T) {
	c := newCluster(t, 2, postgres.QueueOptions{Slots: 6, UserRunning: 6, Lease: 5 * time.Second},
		kontexttest.Options{Latency: 50 * time.Millisecond})
	r0, r1 := c.reps[0], c.reps[1]
	c.start(r0)
	c.start(r1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r0.core.Close(ctx); err != nil {
		t.Fatal(err)
	}
	j := c.submit(r0, "ada", "late")
	c.waitEnded(r1.db, []string{j.ID}, 20*time.Second)
	c.checkOnce(r1.db, []*bot.Job{j})
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	if got := c.l.delivered[j.ID]; !slices.Equal(got, []string{"r1"}) {
		t.Errorf("delivered by %v, want r1 (r0 is stopping)", got)
	}
}

// TestReplicasVariationsPostedOnce: variations groups submitted on
// different replicas run on all of them (their jobs are shared like any
// other), and each group is posted exactly once, by one replica, with
// every image charged once.
func TestReplicasVariationsPostedOnce(t *testing.T) {
	const users, count = 6, 4
	c := newCluster(t, 3, postgres.QueueOptions{Slots: 6, UserRunning: count, UserWaiting: 10, MaxWaiting: 1000, Lease: 5 * time.Second},
		kontexttest.Options{Latency: 40 * time.Millisecond, Jitter: 40 * time.Millisecond})
	for _, r := range c.reps {
		c.start(r)
	}
	var firsts []*bot.Job
	var ids []string
	for u := range users {
		r := c.reps[u%3]
		j, err := r.core.Submit(context.Background(), &bot.Request{Kind: bot.KindImagine, Count: count,
			Conv: bot.ConvKey{Platform: "test", Workspace: "w", Channel: fmt.Sprintf("v%d", u)}, User: fmt.Sprintf("user%d", u), Prompt: fmt.Sprintf("group %d", u)})
		if err != nil {
			t.Fatal(err)
		}
		firsts = append(firsts, j)
		for n := 1; n <= count; n++ {
			ids = append(ids, bot.GroupJobID(j.Group, n))
		}
	}
	c.waitEnded(c.reps[0].db, ids, 60*time.Second)
	c.l.mu.Lock()
	for _, j := range firsts {
		if got := c.l.delivered[j.ID]; len(got) != 1 {
			t.Errorf("group %s: posted by %v, want exactly once", j.Group, got)
		}
		for n := 2; n <= count; n++ {
			if got := c.l.delivered[bot.GroupJobID(j.Group, n)]; len(got) != 0 {
				t.Errorf("job %d of group %s posted on its own by %v", n, j.Group, got)
			}
		}
	}
	c.l.mu.Unlock()
	for u := range users {
		day, _, err := c.reps[1].db.Usage(context.Background(), "test", "w", fmt.Sprintf("user%d", u), time.Now())
		if err != nil || day.Images != count {
			t.Errorf("user%d charged %d images (%v), want %d", u, day.Images, err, count)
		}
	}
	if got := c.fake.Stats().Creates; got != users*count {
		t.Errorf("creates: %d, want %d", got, users*count)
	}
}
