package discordtest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
)

// Route names a kind of REST request, for Inject.
type Route string

// Routes that faults can be injected on.
const (
	// RouteMessageCreate is POST /channels/{channel}/messages.
	RouteMessageCreate Route = "POST /channels/{channel}/messages"
	// RouteMessageEdit is PATCH /channels/{channel}/messages/{message}.
	RouteMessageEdit Route = "PATCH /channels/{channel}/messages/{message}"
	// RouteMessageList is GET /channels/{channel}/messages.
	RouteMessageList Route = "GET /channels/{channel}/messages"
	// RouteWebhookEdit is PATCH /webhooks/{app}/{token}/messages/{message}:
	// an interaction's response or follow-up edited through its token.
	RouteWebhookEdit Route = "PATCH /webhooks/{app}/{token}/messages/{message}"
	// RouteFollowup is POST /webhooks/{app}/{token}: a follow-up message.
	RouteFollowup Route = "POST /webhooks/{app}/{token}"
)

// Fault is what the fake does with one request of a route instead of
// answering it as usual: what Discord and Cloudflare in front of it do
// when something breaks.
type Fault struct {
	// Status answers with this HTTP status: Discord's JSON error body
	// ({"message": "500: Internal Server Error", "code": 0}), or
	// Cloudflare's HTML page when HTML is set.
	Status int
	// HTML makes the body Cloudflare's HTML error page (text/html), as
	// for a 502, 503 or 504 from the edge.
	HTML bool
	// Reset closes the connection without an answer.
	Reset bool
	// After serves the request first (the message is created or edited),
	// then fails with Status or Reset: the client cannot tell it from a
	// failure.
	After bool
	// Files makes the fault apply only to a request that uploads a file
	// (multipart/form-data); other requests of the route pass it by.
	Files bool
}

// Inject makes the next requests of route fail, one fault per request,
// in order.
func (s *Server) Inject(r Route, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[r] = append(s.faults[r], faults...)
}

// ClearFaults drops every fault not applied yet.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.faults)
}

// Faulted is how many injected faults were applied.
func (s *Server) Faulted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faulted
}

// routeOf names the route of an API request, "" for one faults cannot be
// injected on.
func routeOf(method string, seg []string) Route {
	n := len(seg)
	switch {
	case seg[0] == "channels" && n == 3 && seg[2] == "messages" && method == http.MethodPost:
		return RouteMessageCreate
	case seg[0] == "channels" && n == 3 && seg[2] == "messages" && method == http.MethodGet:
		return RouteMessageList
	case seg[0] == "channels" && n == 4 && seg[2] == "messages" && method == http.MethodPatch:
		return RouteMessageEdit
	case seg[0] == "webhooks" && n == 5 && seg[3] == "messages" && method == http.MethodPatch:
		return RouteWebhookEdit
	case seg[0] == "webhooks" && n == 3 && method == http.MethodPost:
		return RouteFollowup
	}
	return ""
}

// fault takes the next fault injected for route that applies to r, if any.
func (s *Server) fault(route Route, r *http.Request) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.faults[route]
	if route == "" || len(q) == 0 {
		return Fault{}, false
	}
	if q[0].Files && !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		return Fault{}, false
	}
	f := q[0]
	s.faults[route] = q[1:]
	s.faulted++
	s.changed()
	return f, true
}

// serveFault answers r with fault f; serve runs the request as usual
// (for a fault After it).
func serveFault(w http.ResponseWriter, r *http.Request, f Fault, serve func(http.ResponseWriter)) {
	if f.After {
		serve(httptest.NewRecorder()) // done, but the answer is lost
	}
	_, _ = io.Copy(io.Discard, r.Body)
	if f.Reset || f.Status == 0 {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler) // the server closes the connection
	}
	if f.HTML {
		text := strconv.Itoa(f.Status) + " " + http.StatusText(f.Status)
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Server", "cloudflare")
		w.WriteHeader(f.Status)
		_, _ = io.WriteString(w, "<html>\r\n<head><title>"+text+"</title></head>\r\n<body>\r\n<center><h1>"+text+
			"</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n")
		return
	}
	writeErr(w, errf(f.Status, 0, "%d: %s", f.Status, http.StatusText(f.Status)))
}
