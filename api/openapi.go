package api

import (
	_ "embed"
	"net/http"
)

// openAPI is the API's contract, an OpenAPI 3 document: every route, its parameters and answers,
// and the schemas of what they carry. A test checks real answers against it.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the API's OpenAPI 3 document, as GET /openapi.json serves it.
func OpenAPI() []byte { return append([]byte(nil), openAPI...) }

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPI)
}
