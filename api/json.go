package api

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"

	"github.com/cube-orchestrator/cube/task"
)

// decode reads one JSON value from the request body into v. The body is limited to
// MaxBodyBytes, unknown fields are rejected, and so is anything after the value. The error says
// what is wrong and where (the byte offset).
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	body := &countingReader{r: http.MaxBytesReader(w, r.Body, MaxBodyBytes)}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, dec.InputOffset(), body.n)
	}
	if _, err := dec.Token(); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return decodeError(err, dec.InputOffset(), body.n)
		}
		return httpErrorf(http.StatusBadRequest, "request body must hold a single JSON object; more data follows at offset %d", dec.InputOffset())
	}
	return nil
}

// countingReader counts the bytes read through it: where a body that ends early ends.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// decodeError describes err, from decoding a body of which read bytes were read and whose value
// under way started at offset.
func decodeError(err error, offset, read int64) error {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
		mbe    *http.MaxBytesError
		ne     net.Error
	)
	switch {
	case errors.As(err, &mbe):
		return httpErrorf(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", mbe.Limit)
	case errors.As(err, &ne) && ne.Timeout():
		return httpErrorf(http.StatusRequestTimeout, "request body not received in time: %d bytes came", read)
	case errors.Is(err, io.EOF):
		return httpErrorf(http.StatusBadRequest, "request body is empty; want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return httpErrorf(http.StatusBadRequest, "malformed JSON: the body ends early, at offset %d", read)
	case errors.As(err, &syntax):
		return httpErrorf(http.StatusBadRequest, "malformed JSON at offset %d: %s", syntax.Offset, syntax.Error())
	case errors.As(err, &typ):
		// taskRequest embeds task.Task, which encoding/json names in the path ("Task.Task.Memory");
		// clients know the key as Task.Memory.
		field := strings.Replace(typ.Field, "Task.Task.", "Task.", 1)
		if field == "" {
			field = "the body"
		}
		return httpErrorf(http.StatusBadRequest, "%s: want %s, got JSON %s (offset %d)", field, typeName(typ.Type), typ.Value, typ.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return httpErrorf(http.StatusBadRequest, "unknown field %s (offset %d)", name, offset)
	}
	return httpErrorf(http.StatusBadRequest, "invalid JSON value before offset %d: %v", offset, err)
}

// typeName describes a Go type to a client: the JSON shape for objects and arrays, the Go type
// for the rest, and never the name of one of cube's own types (api.taskRequest, task.PortSet).
func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "a JSON object"
	case reflect.Slice, reflect.Array:
		return "a JSON array"
	}
	if t.PkgPath() != "" {
		return t.Kind().String() // a named type such as task.State
	}
	return t.String()
}

// encode writes v as JSON with the given status.
func (s *Server) encode(w http.ResponseWriter, r *http.Request, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		s.log.Debug("write response", "method", r.Method, "path", r.URL.Path, "err", err)
	}
}

// encodeTask writes t as JSON with the given status, byte for byte as encode writes it, with
// task.AppendJSON instead of encoding/json's reflection. On an error (a time that RFC 3339 cannot
// write, say), as on encode's, the status goes out without a body; the error is logged.
func (s *Server) encodeTask(w http.ResponseWriter, r *http.Request, status int, t *task.Task) {
	lw := s.getListWriter(nil)
	defer s.putListWriter(lw)
	b, err := task.AppendJSON(lw.task[:0], t)
	if err == nil {
		b = append(b, '\n')
	}
	lw.task = b[:0]
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err == nil {
		_, err = w.Write(b)
	}
	if err != nil {
		s.log.Debug("write response", "method", r.Method, "path", r.URL.Path, "err", err)
	}
}

// listWriter is what encodeSeq and encodeTask reuse from one request to the next: the buffer a
// list goes out through, and the one each task is encoded into.
type listWriter struct {
	bw   *bufio.Writer
	task []byte
}

// getListWriter returns a pooled listWriter whose buffer writes to w.
func (s *Server) getListWriter(w io.Writer) *listWriter {
	lw, _ := s.listWriters.Get().(*listWriter)
	if lw == nil {
		return &listWriter{bw: bufio.NewWriterSize(w, 32<<10), task: make([]byte, 0, 4<<10)}
	}
	lw.bw.Reset(w)
	return lw
}

func (s *Server) putListWriter(lw *listWriter) {
	lw.bw.Reset(nil) // keep no connection alive in the pool
	if cap(lw.task) > 64<<10 {
		lw.task = make([]byte, 0, 4<<10) // nor the buffer of one huge task
	}
	s.listWriters.Put(lw)
}

// encodeSeq writes the values seq yields as a JSON array with the given status, byte for byte as
// encode writes a slice of them, but one element at a time: no list of values is made first, and
// no buffer holds more than one of them (a megabyte at 1,000 tasks). A *task.Task is encoded
// with task.AppendJSON, without reflection, into a reused buffer; any other value with a
// json.Encoder. The elements go out through a pooled 32 KiB buffer, so that the response writer
// (and the middleware wrapping it) sees a few large writes, not one or two per value. An error
// of seq's own, or of an element's encoding, ends the answer where it is; it is logged.
func (s *Server) encodeSeq(w http.ResponseWriter, r *http.Request, status int, seq func(yield func(v any) error) error) {
	w.Header().Set("Content-Type", "application/json")
	// The status goes out with the first bytes, so that a panic while the first 32 KiB are made
	// (in the store, say) still gets the recoverer's 500.
	hw := &headerWriter{w: w, status: status}
	lw := s.getListWriter(hw)
	defer s.putListWriter(lw)
	bw := lw.bw
	var enc *json.Encoder
	err := bw.WriteByte('[')
	first := true
	if err == nil {
		err = seq(func(v any) error {
			if !first {
				if err := bw.WriteByte(','); err != nil {
					return err
				}
			}
			first = false
			if t, ok := v.(*task.Task); ok {
				b, err := task.AppendJSON(lw.task[:0], t)
				lw.task = b[:0] // its capacity, grown or not, serves the next task
				if err != nil {
					return err
				}
				_, err = bw.Write(b)
				return err
			}
			if enc == nil {
				enc = json.NewEncoder(&elementWriter{w: bw})
			}
			return enc.Encode(v)
		})
	}
	if err == nil {
		_, err = bw.WriteString("]\n")
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		s.log.Debug("write response", "method", r.Method, "path", r.URL.Path, "err", err)
	}
}

// headerWriter writes the status before the first bytes.
type headerWriter struct {
	w      http.ResponseWriter
	status int
	sent   bool
}

func (h *headerWriter) Write(p []byte) (int, error) {
	if !h.sent {
		h.sent = true
		h.w.WriteHeader(h.status)
	}
	return h.w.Write(p)
}

// elementWriter passes on what a json.Encoder writes of one array element, less the newline
// Encode ends each value with: Encode writes each value, newline included, in a single Write.
type elementWriter struct{ w io.Writer }

func (e *elementWriter) Write(p []byte) (int, error) {
	n := len(p)
	if n > 0 && p[n-1] == '\n' {
		p = p[:n-1]
	}
	if _, err := e.w.Write(p); err != nil {
		return 0, err
	}
	return n, nil
}
