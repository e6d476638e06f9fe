package api

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker"
	"github.com/cube-orchestrator/cube/worker/workertest"
	"github.com/google/uuid"
)

// The seed corpora are in testdata/fuzz/<FuzzName>/; `make fuzz` runs each fuzzer for a while.

var discard = slog.New(slog.DiscardHandler)

// statusOfError is the status the API answers err with.
func statusOfError(err error) (int, ErrorResponse) {
	s := &Server{log: discard}
	rec := httptest.NewRecorder()
	s.error(rec, httptest.NewRequest(http.MethodPost, "/tasks", nil), err)
	var e ErrorResponse
	json.Unmarshal(rec.Body.Bytes(), &e)
	return rec.Code, e
}

// allowAllPolicy grants every kind of host access, so that Check looks at every field.
var allowAllPolicy = task.Policy{
	AllowPrivileged: true, AllowHostNetwork: true, AllowHostPID: true, AllowCapAdd: true,
	AllowDevices: true, AllowBindMounts: []string{"/srv"},
}

// FuzzDecodeEvent sends any body through POST /tasks's path: the decode helper, the request's own
// checks, and the worker's Submit (spec validation), then the host-access policy. Nothing may
// panic, and every refusal must be a 4xx with a message.
func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(bookManagerBody))
	f.Add([]byte(`{"ID":"1e5a1c7e-7a1c-4d5e-9d7a-1c7e7a1c4d5e","Task":{"ID":"2b7c3d9f-8e1f-4a6b-9c2d-3e4f5a6b7c8d","Image":"a","Binds":["/srv/x:/x:ro"],"CapAdd":["NET_ADMIN"],"Devices":["/dev/fuse"]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/tasks", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		var er eventRequest
		err := decode(rec, req, &er)
		var ev task.Event
		if err == nil {
			ev, err = er.event()
		}
		if err == nil {
			// A fresh worker that never runs: Submit validates and queues, and nothing grows
			// from one input to the next.
			w := worker.New(workertest.New(), worker.Config{Logger: discard})
			_, err = w.Submit(ev)
		}
		if err == nil {
			acceptedFieldsOK(t, body, ev.Task)
			for _, p := range []task.Policy{{}, allowAllPolicy} {
				if err := p.Check(ev.Task); err != nil {
					wantRefusal(t, body, err)
				}
			}
			return
		}
		wantRefusal(t, body, err)
	})
}

// acceptedFieldsOK fails unless the fields of an accepted task are what the Docker Engine reads
// the way the client meant them: ports 1 to 65535 in plain decimal, a stop signal the Engine
// knows, no negative counter. It checks by other means than the validation does.
func acceptedFieldsOK(t *testing.T, body []byte, tk task.Task) {
	t.Helper()
	plainPort := func(s string) bool {
		n, err := strconv.Atoi(s)
		return err == nil && strconv.Itoa(n) == s && n >= 1 && n <= 65535
	}
	for p, host := range tk.PortBindings {
		num, _, _ := strings.Cut(p, "/")
		if !plainPort(num) || (host != "" && !plainPort(host)) {
			t.Fatalf("body %q: accepted the binding %q: %q, want ports 1 to 65535 in plain decimal", body, p, host)
		}
	}
	for p := range tk.ExposedPorts {
		if num, _, _ := strings.Cut(p, "/"); !plainPort(num) {
			t.Fatalf("body %q: accepted the exposed port %q, want 1 to 65535 in plain decimal", body, p)
		}
	}
	if s := tk.StopSignal; s != "" && !engineSignal(s) {
		t.Fatalf("body %q: accepted the stop signal %q, which is no Linux signal", body, s)
	}
	if tk.RestartCount < 0 {
		t.Fatalf("body %q: accepted RestartCount %d, want it not negative", body, tk.RestartCount)
	}
}

// engineSignal reports whether the Engine reads s as a Linux signal: a number 1 to 64, a name
// the syscall package has, or a real-time signal RTMIN..RTMIN+15, RTMAX-14..RTMAX.
func engineSignal(s string) bool {
	if n, err := strconv.Atoi(s); err == nil {
		return strconv.Itoa(n) == s && n >= 1 && n <= 64
	}
	name := "SIG" + strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if _, ok := linuxSignals[name]; ok {
		return true
	}
	for i := 0; i <= 15; i++ {
		if name == rtName("SIGRTMIN", i) || (i <= 14 && name == rtName("SIGRTMAX", -i)) {
			return true
		}
	}
	return false
}

// linuxSignals are the named signals of the syscall package on Linux.
var linuxSignals = map[string]syscall.Signal{
	"SIGABRT": syscall.SIGABRT, "SIGALRM": syscall.SIGALRM, "SIGBUS": syscall.SIGBUS, "SIGCHLD": syscall.SIGCHLD,
	"SIGCLD": syscall.SIGCLD, "SIGCONT": syscall.SIGCONT, "SIGFPE": syscall.SIGFPE, "SIGHUP": syscall.SIGHUP,
	"SIGILL": syscall.SIGILL, "SIGINT": syscall.SIGINT, "SIGIO": syscall.SIGIO, "SIGIOT": syscall.SIGIOT,
	"SIGKILL": syscall.SIGKILL, "SIGPIPE": syscall.SIGPIPE, "SIGPOLL": syscall.SIGPOLL, "SIGPROF": syscall.SIGPROF,
	"SIGPWR": syscall.SIGPWR, "SIGQUIT": syscall.SIGQUIT, "SIGSEGV": syscall.SIGSEGV, "SIGSTKFLT": syscall.SIGSTKFLT,
	"SIGSTOP": syscall.SIGSTOP, "SIGSYS": syscall.SIGSYS, "SIGTERM": syscall.SIGTERM, "SIGTRAP": syscall.SIGTRAP,
	"SIGTSTP": syscall.SIGTSTP, "SIGTTIN": syscall.SIGTTIN, "SIGTTOU": syscall.SIGTTOU, "SIGURG": syscall.SIGURG,
	"SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2, "SIGVTALRM": syscall.SIGVTALRM, "SIGWINCH": syscall.SIGWINCH,
	"SIGXCPU": syscall.SIGXCPU, "SIGXFSZ": syscall.SIGXFSZ,
}

func rtName(base string, off int) string {
	switch {
	case off > 0:
		return base + "+" + strconv.Itoa(off)
	case off < 0:
		return base + strconv.Itoa(off)
	}
	return base
}

func wantRefusal(t *testing.T, body []byte, err error) {
	t.Helper()
	status, e := statusOfError(err)
	if status < 400 || status > 499 || e.HTTPStatusCode != status || e.Message == "" || e.Message == "internal error" {
		t.Fatalf("body %q: error %v answers %d %+v, want a 4xx with a message", body, err, status, e)
	}
}

// FuzzRouteTaskID sends any task ID path segment through the router, for GET and DELETE, with and
// without the token. Nothing may panic, nothing may be a 5xx, and only the known task is found.
func FuzzRouteTaskID(f *testing.F) {
	known := uuid.MustParse("2b7c3d9f-8e1f-4a6b-9c2d-3e4f5a6b7c8d")
	f.Add(known.String())
	f.Add("not-a-uuid")
	f.Fuzz(func(t *testing.T, seg string) {
		u, err := url.Parse("/tasks/" + seg)
		if err != nil {
			return // no client can send it
		}
		w := worker.New(workertest.New(), worker.Config{Logger: discard})
		tk := task.Task{ID: known, State: task.Scheduled, Image: "cube-echo:latest"}
		if _, err := w.Submit(task.Event{ID: uuid.New(), State: task.Running, Task: tk}); err != nil {
			t.Fatal(err)
		}
		h := New(w, Options{Logger: discard, Token: fullToken})
		for _, method := range []string{http.MethodGet, http.MethodDelete} {
			for _, authorization := range []string{"Bearer " + fullToken, ""} {
				req := httptest.NewRequest(method, "/", nil)
				req.URL, req.RequestURI = u, u.RequestURI()
				if authorization != "" {
					req.Header.Set("Authorization", authorization)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				switch {
				case rec.Code >= 500:
					t.Fatalf("%s %s: got %d %s, want no 5xx", method, u, rec.Code, rec.Body)
				case authorization == "" && rec.Code != http.StatusUnauthorized:
					t.Fatalf("%s %s without a token: got %d, want 401", method, u, rec.Code)
				case rec.Code == http.StatusOK && chiParam(u) == "":
					// GET /tasks/ is the list.
					var list []task.Task
					if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || len(list) != 1 {
						t.Fatalf("%s %s: got 200 %s, want the list", method, u, rec.Body)
					}
				case rec.Code == http.StatusOK:
					var got task.Task
					if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got.ID != known {
						t.Fatalf("%s %s: got 200 %s, want only the known task found", method, u, rec.Body)
					}
				case rec.Code == http.StatusNoContent:
					if id, err := uuid.Parse(chiParam(u)); err != nil || id != known {
						t.Fatalf("%s %s: got 204 for an unknown task", method, u)
					}
				case rec.Code >= 400:
					var e ErrorResponse
					if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.HTTPStatusCode != rec.Code || e.Message == "" {
						t.Fatalf("%s %s: got %d %q, want a JSON error", method, u, rec.Code, rec.Body)
					}
				default:
					t.Fatalf("%s %s: got %d, want 200, 204 or a 4xx", method, u, rec.Code)
				}
			}
		}
	})
}

// chiParam returns the taskID segment as chi routes it: the escaped path when there is one.
func chiParam(u *url.URL) string {
	p := u.RawPath
	if p == "" {
		p = u.Path
	}
	return p[len("/tasks/"):]
}
