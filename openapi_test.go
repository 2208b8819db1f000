package msgsvc_test

// The OpenAPI document is checked against the real handler: every route and
// every documented status is driven through msgsvc.New on a :memory: SQLite
// store, and each answer (status, headers, body) is validated against
// openapi.yaml with kin-openapi. Each request is also validated against the
// document, and the test states whether the document should accept it, so
// the parameter bounds and body rules cannot drift from the handler's either.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/msgsvc/msgsvc"
)

// loadOpenAPI loads and validates the embedded document.
func loadOpenAPI(tb testing.TB) *openapi3.T {
	tb.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(msgsvc.OpenAPI())
	if err != nil {
		tb.Fatalf("loading openapi.yaml: %v", err)
	}
	if err := doc.Validate(loader.Context, openapi3.EnableExamplesValidation()); err != nil {
		tb.Fatalf("openapi.yaml is not a valid OpenAPI document: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() || !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		tb.Fatalf("openapi.yaml declares openapi %q, want 3.1.x", doc.OpenAPI)
	}
	return doc
}

func TestOpenAPIDocument(t *testing.T) {
	doc := loadOpenAPI(t)

	// The document names exactly the handler's paths, each with exactly the
	// methods the handler allows (with a verify token, GET /webhook exists).
	e := newEnv(t, func(c *msgsvc.Config) { c.VerifyToken = "tok" })
	want := []string{"/health/live", "/health/ready", "/messages", "/metrics", "/openapi.yaml", "/stats", "/webhook"}
	got := doc.Paths.Keys()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("document paths %v, want %v", got, want)
	}
	for _, path := range got {
		rec := e.serve(t, httptest.NewRequest("PUT", path, nil))
		if rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("PUT %s: %d, want 405", path, rec.Code)
			continue
		}
		var methods []string
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost} {
			if doc.Paths.Value(path).GetOperation(m) != nil {
				methods = append(methods, m)
			}
		}
		if allow, documented := rec.Header().Get("Allow"), strings.Join(methods, ", "); allow != documented {
			t.Errorf("%s: handler allows %q, document has %q", path, allow, documented)
		}
	}
}

func TestOpenAPIServed(t *testing.T) {
	e := newEnv(t)
	rec := e.get(t, "/openapi.yaml")
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /openapi.yaml: %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/yaml" {
		t.Errorf("Content-Type %q, want application/yaml", ct)
	}
	if !bytes.Equal(rec.Body.Bytes(), msgsvc.OpenAPI()) {
		t.Errorf("GET /openapi.yaml does not serve the embedded document")
	}
	if cl := rec.Header().Get("Content-Length"); cl != fmt.Sprint(len(msgsvc.OpenAPI())) {
		t.Errorf("Content-Length %s, want %d", cl, len(msgsvc.OpenAPI()))
	}
	// OpenAPI returns a copy: a caller cannot change what is served.
	b := msgsvc.OpenAPI()
	b[0] = '#'
	if msgsvc.OpenAPI()[0] == '#' {
		t.Errorf("OpenAPI() returns the embedded array itself")
	}

	// Over a real server, HEAD has the headers and no body.
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	resp, err := srv.Client().Head(srv.URL + "/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b := readAll(t, resp.Body); resp.StatusCode != 200 || len(b) != 0 || resp.Header.Get("Content-Type") != "application/yaml" {
		t.Errorf("HEAD /openapi.yaml: %d, %d body bytes, Content-Type %q", resp.StatusCode, len(b), resp.Header.Get("Content-Type"))
	}
	wantMetric(t, e.metricsText(t), `http_requests_total{path="/openapi.yaml",status="200"}`, 2) // the GET and the HEAD
}

// apiCase is one request and what the handler and the document must say.
type apiCase struct {
	name   string
	env    string // key of the envs map in TestOpenAPIResponses
	method string
	target string
	body   []byte
	reader io.Reader // a body that fails, instead of body
	sign   string    // "x" signs body in X-Signature, "hub" in X-Hub-Signature-256
	header []string  // more headers, name then value
	status int
	// specRejects is set when the document itself refuses the request:
	// the handler must then answer with an error status too.
	specRejects bool
	check       func(t *testing.T, rec *httptest.ResponseRecorder)
}

func (c apiCase) request(t *testing.T) *http.Request {
	t.Helper()
	var r *http.Request
	switch {
	case c.reader != nil:
		r = httptest.NewRequest(c.method, c.target, c.reader)
	case c.body != nil:
		r = httptest.NewRequest(c.method, c.target, bytes.NewReader(c.body))
		r.Header.Set("Content-Type", "application/json")
	default:
		r = httptest.NewRequest(c.method, c.target, nil)
	}
	switch c.sign {
	case "x":
		r.Header.Set(msgsvc.SignatureHeader, msgsvc.Sign([]byte(testSecret), c.body))
	case "hub":
		r.Header.Set(msgsvc.HubSignatureHeader, "sha256="+msgsvc.Sign([]byte(testSecret), c.body))
	}
	for i := 0; i+1 < len(c.header); i += 2 {
		r.Header.Set(c.header[i], c.header[i+1])
	}
	return r
}

func waDelivery(t *testing.T, messages, statuses any) []byte {
	t.Helper()
	value := map[string]any{
		"messaging_product": "whatsapp",
		"metadata":          map[string]any{"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
	}
	if messages != nil {
		value["messages"] = messages
	}
	if statuses != nil {
		value["statuses"] = statuses
	}
	b, err := json.Marshal(map[string]any{
		"object": "whatsapp_business_account",
		"entry": []any{map[string]any{
			"id":      "102290129340398",
			"changes": []any{map[string]any{"field": "messages", "value": value}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOpenAPIResponses(t *testing.T) {
	doc := loadOpenAPI(t)
	ctx := context.Background()

	envs := map[string]*env{
		"default":    newEnv(t, func(c *msgsvc.Config) { c.VerifyToken = "tok" }),
		"empty":      newEnv(t),
		"no-secret":  newEnv(t, func(c *msgsvc.Config) { c.Secret = "" }),
		"down":       newEnv(t), // every store call fails with ErrUnavailable
		"broken":     newEnv(t), // every store call fails with another error
		"small-body": newEnv(t, func(c *msgsvc.Config) { c.MaxBodyBytes = 64 }),
	}
	unavailable := fmt.Errorf("database is locked: %w", msgsvc.ErrUnavailable)
	envs["down"].store.failInsert(unavailable)
	envs["down"].store.failRead(unavailable)
	envs["down"].store.failPing(unavailable)
	broken := errors.New("disk I/O error")
	envs["broken"].store.failInsert(broken)
	envs["broken"].store.failRead(broken)

	def := envs["default"]
	def.seed(t,
		msg("m1", "+919876543210", "2025-01-15T10:00:00Z", ptr("Hello")),
		msg("m2", "+14155550100", "2025-01-15T10:00:00.5Z", ptr("Bonjour, ÉCOLE")),
		msg("m3", "+919876543210", "2025-01-16T09:00:00Z", nil),
	)
	cursor := def.list(t, "limit=1").NextCursor
	if cursor == nil {
		t.Fatal("no next_cursor on a first page of 1")
	}

	message := func(id string) []byte {
		return body(t, map[string]any{"message_id": id, "from": "+919876543210", "to": "+14155550100", "ts": "2025-01-17T10:00:00Z", "text": "hi"})
	}
	waMessage := map[string]any{"from": "16505551234", "id": "wamid.A1", "timestamp": "1749416383", "type": "text", "text": map[string]any{"body": "Does it come in another color?"}}
	waImage := map[string]any{"from": "16505551234", "id": "wamid.A2", "timestamp": 1749416384, "type": "image", "image": map[string]any{"caption": "this one", "id": "img1"}}
	waBad := map[string]any{"from": "06505551234", "id": "wamid.A3", "timestamp": "soon", "type": "text", "text": map[string]any{"body": "x"}}
	waStatus := map[string]any{"id": "wamid.A1", "status": "delivered", "timestamp": "1749416390", "recipient_id": "16505551234"}
	sig := msgsvc.Sign([]byte(testSecret), []byte("something else"))

	cases := []apiCase{
		// POST /webhook
		{name: "message", env: "default", method: "POST", target: "/webhook", body: message("w1"), sign: "x", status: 200},
		{name: "duplicate", env: "default", method: "POST", target: "/webhook", body: message("w1"), sign: "x", status: 200},
		{name: "hub signature", env: "default", method: "POST", target: "/webhook", body: message("w2"), sign: "hub", status: 200},
		{name: "text null, unknown field", env: "default", method: "POST", target: "/webhook", sign: "x", status: 200,
			body: []byte(`{"message_id":"w3","from":"+919876543210","to":"+14155550100","ts":"2025-01-17T10:00:00.123456789Z","text":null,"extra":1}`)},
		{name: "whatsapp delivery", env: "default", method: "POST", target: "/webhook", body: waDelivery(t, []any{waMessage, waImage}, nil), sign: "hub", status: 200},
		{name: "whatsapp statuses only", env: "default", method: "POST", target: "/webhook", body: waDelivery(t, nil, []any{waStatus}), sign: "hub", status: 200},
		// The document cannot state the mapped rules (E.164 after "+", a
		// whole number of seconds), so it accepts this delivery.
		{name: "whatsapp invalid message", env: "default", method: "POST", target: "/webhook", body: waDelivery(t, []any{waMessage, waBad}, nil), sign: "hub", status: 422,
			check: wantLoc(`["body","entry",0,"changes",0,"value","messages",1,"from"]`, `["body","entry",0,"changes",0,"value","messages",1,"timestamp"]`)},
		{name: "no signature", env: "default", method: "POST", target: "/webhook", body: message("w4"), status: 401},
		{name: "wrong signature", env: "default", method: "POST", target: "/webhook", body: message("w4"), header: []string{"X-Signature", sig}, status: 401},
		{name: "malformed signature", env: "default", method: "POST", target: "/webhook", body: message("w4"), header: []string{"X-Signature", "zz"}, status: 401, specRejects: true},
		{name: "too large", env: "small-body", method: "POST", target: "/webhook", body: message(strings.Repeat("x", 100)), sign: "x", status: 413},
		{name: "invalid fields", env: "default", method: "POST", target: "/webhook", sign: "x", status: 422, specRejects: true,
			body:  []byte(`{"message_id":"","from":"919876543210","to":"+14155550100","ts":"2025-02-30T10:00:00"}`),
			check: wantLoc(`["body","message_id"]`, `["body","from"]`, `["body","ts"]`)},
		{name: "missing fields", env: "default", method: "POST", target: "/webhook", body: []byte(`{}`), sign: "x", status: 422, specRejects: true,
			check: wantLoc(`["body","message_id"]`, `["body","from"]`, `["body","to"]`, `["body","ts"]`)},
		{name: "json syntax error", env: "default", method: "POST", target: "/webhook", body: []byte(`{"message_id": `), sign: "x", status: 422, specRejects: true},
		{name: "empty body", env: "default", method: "POST", target: "/webhook", body: []byte{}, sign: "x", status: 422, specRejects: true},
		{name: "body read error", env: "default", method: "POST", target: "/webhook", reader: failingReader{}, status: 400},
		{name: "no secret", env: "no-secret", method: "POST", target: "/webhook", body: message("w5"), sign: "x", status: 503},
		{name: "store down", env: "down", method: "POST", target: "/webhook", body: message("w5"), sign: "x", status: 503, check: wantHeader("Retry-After", "1")},
		{name: "store broken", env: "broken", method: "POST", target: "/webhook", body: message("w5"), sign: "x", status: 500},

		// GET /webhook
		{name: "handshake", env: "default", method: "GET", target: "/webhook?hub.mode=subscribe&hub.verify_token=tok&hub.challenge=1158201444", status: 200,
			check: wantBody("1158201444")},
		{name: "handshake wrong token", env: "default", method: "GET", target: "/webhook?hub.mode=subscribe&hub.verify_token=bad&hub.challenge=1", status: 403},
		{name: "handshake without token configured", env: "empty", method: "GET", target: "/webhook?hub.mode=subscribe&hub.verify_token=tok&hub.challenge=1", status: 405,
			check: wantHeader("Allow", "POST")},

		// GET /messages
		{name: "list", env: "default", method: "GET", target: "/messages", status: 200},
		{name: "list empty", env: "empty", method: "GET", target: "/messages", status: 200},
		{name: "list every parameter", env: "default", method: "GET", status: 200,
			target: "/messages?limit=1&offset=0&from=+919876543210&since=2025-01-15T15:30:00+05:30&q=hello"},
		{name: "list empty parameters", env: "default", method: "GET", target: "/messages?from=&since=&q=&cursor=", status: 200},
		{name: "list page with next_cursor", env: "default", method: "GET", target: "/messages?limit=1&offset=1", status: 200},
		{name: "list cursor", env: "default", method: "GET", target: "/messages?limit=1&cursor=" + *cursor, status: 200},
		{name: "limit 0, offset -1", env: "default", method: "GET", target: "/messages?limit=0&offset=-1", status: 422, specRejects: true,
			check: wantLoc(`["query","limit"]`, `["query","offset"]`)},
		{name: "limit 101", env: "default", method: "GET", target: "/messages?limit=101", status: 422, specRejects: true},
		{name: "limit not an integer", env: "default", method: "GET", target: "/messages?limit=ten", status: 422, specRejects: true},
		{name: "limit empty", env: "default", method: "GET", target: "/messages?limit=", status: 422, specRejects: true},
		{name: "since malformed", env: "default", method: "GET", target: "/messages?since=yesterday", status: 422, specRejects: true},
		{name: "cursor malformed", env: "default", method: "GET", target: "/messages?cursor=!!", status: 422, specRejects: true},
		{name: "cursor with offset", env: "default", method: "GET", target: "/messages?offset=1&cursor=" + *cursor, status: 422,
			check: wantLoc(`["query","cursor"]`)},
		{name: "query malformed", env: "default", method: "GET", target: "/messages?q=%zz", status: 422, check: wantLoc(`["query"]`)},
		{name: "list store down", env: "down", method: "GET", target: "/messages", status: 503},
		{name: "list store broken", env: "broken", method: "GET", target: "/messages", status: 500},

		// GET /stats
		{name: "stats", env: "default", method: "GET", target: "/stats", status: 200},
		{name: "stats empty", env: "empty", method: "GET", target: "/stats", status: 200},
		{name: "stats store down", env: "down", method: "GET", target: "/stats", status: 503},
		{name: "stats store broken", env: "broken", method: "GET", target: "/stats", status: 500},

		// Probes, metrics, this document.
		{name: "live", env: "default", method: "GET", target: "/health/live", status: 200},
		{name: "ready", env: "default", method: "GET", target: "/health/ready", status: 200},
		{name: "ready without secret", env: "no-secret", method: "GET", target: "/health/ready", status: 503},
		{name: "ready store down", env: "down", method: "GET", target: "/health/ready", status: 503},
		{name: "metrics", env: "default", method: "GET", target: "/metrics", status: 200},
		{name: "openapi", env: "default", method: "GET", target: "/openapi.yaml", status: 200},

		// HEAD on every GET route.
		{name: "head messages", env: "default", method: "HEAD", target: "/messages", status: 200},
		{name: "head messages 422", env: "default", method: "HEAD", target: "/messages?limit=0", status: 422, specRejects: true},
		{name: "head stats", env: "default", method: "HEAD", target: "/stats", status: 200},
		{name: "head live", env: "default", method: "HEAD", target: "/health/live", status: 200},
		{name: "head ready", env: "default", method: "HEAD", target: "/health/ready", status: 200},
		{name: "head ready 503", env: "no-secret", method: "HEAD", target: "/health/ready", status: 503},
		{name: "head metrics", env: "default", method: "HEAD", target: "/metrics", status: 200},
		{name: "head openapi", env: "default", method: "HEAD", target: "/openapi.yaml", status: 200},

		// Routing errors.
		{name: "unknown path", env: "default", method: "GET", target: "/nope", status: 404},
		{name: "trailing slash", env: "default", method: "GET", target: "/messages/", status: 404},
		{name: "wrong method", env: "default", method: "DELETE", target: "/stats", status: 405, check: wantHeader("Allow", "GET, HEAD")},
		{name: "post to a GET route", env: "default", method: "POST", target: "/messages", body: []byte(`{}`), status: 405},
		{name: "head on webhook", env: "default", method: "HEAD", target: "/webhook", status: 405, check: wantHeader("Allow", "GET, POST")},
	}

	statuses := map[string]map[int]bool{} // documented statuses exercised, by operation
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := envs[c.env]
			req := c.request(t)
			route := openAPIRoute(doc, req)

			// The request, as the document sees it.
			if route.Operation != nil && c.reader == nil {
				err := openapi3filter.ValidateRequest(ctx, &openapi3filter.RequestValidationInput{
					Request: req, Route: route,
					Options: &openapi3filter.Options{SkipSettingDefaults: true, MultiError: true},
				})
				if rejected := err != nil; rejected != c.specRejects {
					t.Errorf("document rejects the request: %v, want %v (%v)", rejected, c.specRejects, err)
				}
			}

			rec := e.serve(t, c.request(t))
			if rec.Code != c.status {
				t.Fatalf("%s %s: %d %s, want %d", c.method, c.target, rec.Code, rec.Body, c.status)
			}
			if c.specRejects && rec.Code < 400 {
				t.Errorf("the document refuses the request, the handler answered %d", rec.Code)
			}
			if c.check != nil {
				c.check(t, rec)
			}

			validateAnswer(t, doc, route, req, rec)
			if route.Operation != nil {
				key := c.method + " " + route.Path
				if statuses[key] == nil {
					statuses[key] = map[int]bool{}
				}
				statuses[key][rec.Code] = true
			}
		})
	}

	// Every status the document lists for an operation was exercised.
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			for code := range op.Responses.Map() {
				if code == "default" {
					continue
				}
				n, err := strconv.Atoi(code)
				if err != nil {
					t.Errorf("%s %s: status %q is not a number", method, path, code)
					continue
				}
				if !statuses[method+" "+path][n] {
					t.Errorf("%s %s: documented status %d never exercised", method, path, n)
				}
			}
		}
	}
}

// openAPIRoute finds the document's operation for r. Paths are exact, so no
// router is needed; Operation is nil when the path or the method is not in
// the document, and then PathItem tells which.
func openAPIRoute(doc *openapi3.T, r *http.Request) *routers.Route {
	route := &routers.Route{Spec: doc, Path: r.URL.Path, Method: r.Method}
	if item := doc.Paths.Value(r.URL.Path); item != nil {
		route.PathItem = item
		route.Operation = item.GetOperation(r.Method)
	}
	return route
}

// validateAnswer validates a recorded answer against the document: the
// operation's response for its status (undocumented statuses fail), headers
// included; for 404 and 405 the component responses NotFound and
// MethodNotAllowed, which no operation can name.
func validateAnswer(t *testing.T, doc *openapi3.T, route *routers.Route, req *http.Request, rec *httptest.ResponseRecorder) {
	t.Helper()
	switch {
	case route.PathItem == nil:
		if rec.Code != http.StatusNotFound {
			t.Errorf("path %s is not in the document, yet answered %d", route.Path, rec.Code)
		}
		route = componentRoute(doc, route, http.StatusNotFound, "NotFound")
	case route.Operation == nil:
		if rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s is not in the document, yet answered %d", route.Method, route.Path, rec.Code)
		}
		route = componentRoute(doc, route, http.StatusMethodNotAllowed, "MethodNotAllowed")
	}
	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}
	if req.Method == http.MethodHead {
		// ValidateResponse skips HEAD; validate the status and headers
		// against the HEAD operation as if it were a GET, without a body.
		// (A real server drops it; TestRouting and TestOpenAPIServed
		// check that.)
		get := req.Clone(req.Context())
		get.Method = http.MethodGet
		req = get
		opts.ExcludeResponseBody = true
	}
	err := openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, Route: route},
		Status:                 rec.Code,
		Header:                 rec.Header(),
		Body:                   io.NopCloser(bytes.NewReader(rec.Body.Bytes())),
		Options:                opts,
	})
	if err != nil {
		t.Errorf("answer %d %s does not match the document: %v", rec.Code, truncate(rec.Body.String()), err)
	}
}

// componentRoute is a stand-in operation answering code with the named
// component response.
func componentRoute(doc *openapi3.T, route *routers.Route, code int, name string) *routers.Route {
	resp := doc.Components.Responses[name]
	op := &openapi3.Operation{Responses: openapi3.NewResponses(openapi3.WithStatus(code, resp))}
	r := *route
	r.Operation = op
	return &r
}

func truncate(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

func wantLoc(locs ...string) func(*testing.T, *httptest.ResponseRecorder) {
	return func(t *testing.T, rec *httptest.ResponseRecorder) {
		t.Helper()
		var v struct {
			Detail []struct {
				Loc json.RawMessage `json:"loc"`
			} `json:"detail"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("422 body %s: %v", rec.Body, err)
		}
		var got []string
		for _, d := range v.Detail {
			got = append(got, string(d.Loc))
		}
		for _, l := range locs {
			if !slices.Contains(got, l) {
				t.Errorf("loc %s missing from %v", l, got)
			}
		}
	}
}

func wantHeader(name, value string) func(*testing.T, *httptest.ResponseRecorder) {
	return func(t *testing.T, rec *httptest.ResponseRecorder) {
		t.Helper()
		if got := rec.Header().Get(name); got != value {
			t.Errorf("%s: %q, want %q", name, got, value)
		}
	}
}

func wantBody(want string) func(*testing.T, *httptest.ResponseRecorder) {
	return func(t *testing.T, rec *httptest.ResponseRecorder) {
		t.Helper()
		if got := rec.Body.String(); got != want {
			t.Errorf("body %q, want %q", got, want)
		}
	}
}
