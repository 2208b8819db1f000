package msgsvc

import (
	_ "embed" // for the OpenAPI document
	"net/http"
	"strconv"
)

// openAPIDocument is openapi.yaml, the OpenAPI 3.1 description of every
// route the handler serves.
//
//go:embed openapi.yaml
var openAPIDocument []byte

// OpenAPI returns the OpenAPI 3.1 document (YAML) describing the HTTP
// contract that a [Handler] serves, as GET /openapi.yaml serves it. The
// caller owns the returned slice.
func OpenAPI() []byte {
	return append([]byte(nil), openAPIDocument...)
}

// serveOpenAPI answers GET and HEAD /openapi.yaml with the embedded document.
func (h *Handler) serveOpenAPI(w http.ResponseWriter, _ *http.Request, _ *requestLog) {
	hdr := w.Header()
	hdr.Set("Content-Type", "application/yaml")
	hdr.Set("Content-Length", strconv.Itoa(len(openAPIDocument)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPIDocument)
}
