package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sync"
	"testing"
)

// balancer stands for the operator's load balancer in front of the
// replicas' HTTP_ADDR, as the Interactions Endpoint URL and Slack's
// Request URL reach them: round robin over the replicas, and a request
// whose connection a replica refuses (stopped or dead) goes to the next
// one, as nginx's proxy_next_upstream does for connection errors. It
// opens a connection per request, so a replica that stopped listening is
// never reached through an idle connection kept from before.
type balancer struct {
	srv *httptest.Server
	hc  *http.Client

	mu       sync.Mutex
	backends map[string]string // replica id -> host:port of its current process
	next     int
}

func newBalancer(t *testing.T) *balancer {
	t.Helper()
	lb := &balancer{backends: map[string]string{},
		hc: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
	lb.srv = httptest.NewServer(lb)
	t.Cleanup(lb.srv.Close)
	return lb
}

// set points replica id's backend at addr.
func (lb *balancer) set(id, addr string) {
	lb.mu.Lock()
	lb.backends[id] = addr
	lb.mu.Unlock()
}

// order is the backends to try for the next request.
func (lb *balancer) order() []string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	ids := make([]string, 0, len(lb.backends))
	for id := range lb.backends {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]string, 0, len(ids))
	for i := range ids {
		out = append(out, lb.backends[ids[(lb.next+i)%len(ids)]])
	}
	lb.next++
	return out
}

func (lb *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, addr := range lb.order() {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+addr+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := lb.hc.Do(req)
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			continue // refused: nothing was sent, try the next replica
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		resp.Body.Close()
		return
	}
	http.Error(w, "no replica answers", http.StatusBadGateway)
}

// httpAddr is the HTTP_ADDR a serve process listens on, from its
// "kontextbot ready" line.
func (p *proc) httpAddr() string {
	p.t.Helper()
	m := regexp.MustCompile(`msg="kontextbot ready".* http=(\S+)`).FindStringSubmatch(p.stderr.String())
	if m == nil {
		p.t.Fatalf("kontextbot %s: no ready line with its HTTP address", p.name)
	}
	return m[1]
}
