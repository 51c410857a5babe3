package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
)

// createdThenHeld serves fake, but handles the first create for real (its
// prediction exists and will be billed) and then never answers it: the
// request is held until the client gives up, so the client cannot know
// the prediction's id. Later creates are answered normally, so a client
// that sends the create again makes a second prediction.
func createdThenHeld(fake http.Handler) http.Handler {
	var first atomic.Bool
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		isCreate := r.Method == http.MethodPost && (r.URL.Path == "/replicate/v1/predictions" ||
			strings.HasPrefix(r.URL.Path, "/replicate/v1/models/") && strings.HasSuffix(r.URL.Path, "/predictions"))
		if !isCreate || first.Swap(true) {
			fake.ServeHTTP(w, r)
			return
		}
		fake.ServeHTTP(httptest.NewRecorder(), r)
		<-r.Context().Done()
		panic(http.ErrAbortHandler) // never answered
	})
}

// TestImagineAgainstAFailingProvider runs `kontextbot imagine` through
// run, the real wiring, against a provider that does not answer or
// answers nonsense: the create is sent once, never again (a create that
// may have reached the provider is not idempotent); a prediction whose id
// is known but that ends undelivered, for any reason, is cancelled; the
// person is told what happened (that the provider did not answer in time,
// for a hang); nothing is written.
func TestImagineAgainstAFailingProvider(t *testing.T) {
	read := map[string]bool{}
	loadConfig(func(k string) string { read[k] = true; return "" })
	if !read["KONTEXT_REQUEST_TIMEOUT"] {
		t.Skip("needs the provider branch (issue 10, client half): a configurable KONTEXT_REQUEST_TIMEOUT, no re-POST of a create that may have made a prediction, and a cancel for every prediction that ends undelivered; this client re-sends a hung create and never cancels after failed polls")
	}
	tests := []struct {
		name string
		// setup arranges the fault and returns the base URL to use.
		setup           func(s *kontexttest.Server) string
		wantSay         string // in the error printed
		wantPredictions int    // predictions the provider made (and bills)
		wantCancels     int    // cancel requests it received
	}{
		{
			name: "CreateNeverAnswered",
			setup: func(s *kontexttest.Server) string {
				s.Inject(kontexttest.Create, kontexttest.Fault{Hang: true})
				return s.URL
			},
			wantSay:         "answer",
			wantPredictions: 0,
		},
		{
			// The prediction exists, but its id never reached the client:
			// it cannot be cancelled (CometAPI has no way to find it).
			name: "CreatedButNeverAnswered",
			setup: func(s *kontexttest.Server) string {
				srv := httptest.NewServer(createdThenHeld(s.Fake))
				t.Cleanup(srv.Close)
				return srv.URL
			},
			wantSay:         "answer",
			wantPredictions: 1,
		},
		{
			name: "PollsNeverAnswered",
			setup: func(s *kontexttest.Server) string {
				for range 50 {
					s.Inject(kontexttest.Poll, kontexttest.Fault{Hang: true})
				}
				return s.URL
			},
			wantSay:         "answer",
			wantPredictions: 1,
			wantCancels:     1,
		},
		{
			name: "PollAnswerMalformed",
			setup: func(s *kontexttest.Server) string {
				s.Inject(kontexttest.Poll, kontexttest.Fault{MalformedJSON: true})
				return s.URL
			},
			wantPredictions: 1,
			wantCancels:     1,
		},
		{
			name: "PollsFailUntilTheRetriesRunOut",
			setup: func(s *kontexttest.Server) string {
				for range 50 {
					s.Inject(kontexttest.Poll, kontexttest.Fault{Status: http.StatusServiceUnavailable})
				}
				return s.URL
			},
			wantPredictions: 1,
			wantCancels:     1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Predictions run long enough for a cancel to find them running.
			s, env := fakeEnv(t, kontexttest.Options{Latency: time.Minute})
			os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600)
			env["COMETAPI_BASE_URL"] = tt.setup(s)
			env["KONTEXT_WAIT"] = "0"
			env["KONTEXT_REQUEST_TIMEOUT"] = "2s"
			env["KONTEXT_FIRST_POLL"] = "100ms"
			out := filepath.Join(t.TempDir(), "fox.png")
			// Far above what a client that gives up after its request
			// timeout needs; a client that re-sends, or never times out,
			// is interrupted here.
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			err := run(ctx, []string{"imagine", "-prompt", "a red fox", "-o", out}, envMap(env), &stdout, &stderr)
			if err == nil {
				t.Fatalf("imagine succeeded against a provider that does not answer:\n%s", stdout.String())
			}
			if strings.Contains(err.Error(), "interrupted") || !strings.Contains(err.Error(), tt.wantSay) {
				t.Errorf("got %q, want the command to end by itself, saying %q", err, tt.wantSay)
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("a file was written")
			}
			st := s.Stats()
			if st.Creates != 1 {
				t.Errorf("create requests: got %d, want 1 (a create that may have reached the provider is never sent again)", st.Creates)
			}
			if got := st.Runs + st.Active + st.Canceled; got != tt.wantPredictions {
				t.Errorf("predictions made: got %d, want %d", got, tt.wantPredictions)
			}
			if st.Cancels != tt.wantCancels || st.Canceled != tt.wantCancels {
				t.Errorf("cancels: got %d requests, %d predictions canceled; want %d", st.Cancels, st.Canceled, tt.wantCancels)
			}
		})
	}
}
