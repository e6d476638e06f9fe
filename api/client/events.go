package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// Event is one change to a task, from the worker's event stream (GET /events): one of the
// task's Records (Type and Message) with the task's state after it. It encodes to JSON as the
// stream's data does.
type Event struct {
	Seq          int64      // the event's number, also its SSE id; one more than the last's within a run of the worker, and never lower across a restart
	Time         time.Time  // when it happened
	TaskID       uuid.UUID  // the task it happened to
	Name         string     // the task's name
	Type         string     // a task.Record type: Received, Pulling, Pulled, Created, Started, Exited, OOMKilled, Healthy, Unhealthy, Restarting, NotRestarting, Killing, Killed, Stopped, Failed, Paused, Unpaused; State for a change of state or health alone; or EventReset
	Message      string     `json:",omitempty"` // details, as in the task's Record
	State        task.State // the task's state after the event
	HealthStatus string     `json:",omitempty"` // the task's health after the event: "starting", "healthy", "unhealthy" or empty
	RestartCount int        // the task's restarts after the event
}

// Live, as the lastEventID of Events or Watch, asks for new events only.
const Live int64 = -1

// EventReset is the Type of an Event that is no change to a task: the worker could not replay
// every event after the lastEventID asked for, because it restarted since (event numbers never go
// back, but a restarted worker does not have the events of its earlier run) or they are no longer
// kept. The events in between are lost: the receiver must read the tasks again (Tasks) and go on
// from this event, whose Seq is the worker's newest. Message says why.
const EventReset = task.ChangeReset

// Events opens the worker's event stream (GET /events, Server-Sent Events). With lastEventID
// Live it carries only events from now on; with 0, first every event the worker still keeps; with
// N, first the kept events after event N (sent as the Last-Event-ID header), so that a client that
// lost its stream gets what it missed, or, when the worker no longer has them all (it restarted,
// or they are too old), an event of Type EventReset. The caller reads events with Next and closes
// the stream.
func (c *Client) Events(ctx context.Context, lastEventID int64) (*EventStream, error) {
	req := request{method: http.MethodGet, path: "/events", accept: "text/event-stream", stream: true}
	if lastEventID >= 0 {
		req.header = http.Header{"Last-Event-Id": {strconv.FormatInt(lastEventID, 10)}}
	}
	resp, cancel, err := c.send(ctx, req)
	if err != nil {
		return nil, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		cancel()
		return nil, task.Errorf(task.EINTERNAL, "GET /events: the worker answered %s, want text/event-stream", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), maxEventBytes)
	return &EventStream{ctx: ctx, body: resp.Body, cancel: cancel, sc: sc, last: lastEventID}, nil
}

// maxEventBytes bounds one line of the event stream.
const maxEventBytes = 1 << 20

// EventStream is an open event stream. It is not safe for concurrent use, except Close.
type EventStream struct {
	ctx    context.Context
	body   io.ReadCloser
	cancel context.CancelFunc
	sc     *bufio.Scanner
	last   int64
}

// Next returns the next event, waiting for it. It returns io.EOF when the worker ends the
// stream, the context's error when the context is done, and another error when the stream
// breaks or carries an event it cannot decode.
func (s *EventStream) Next() (Event, error) {
	var (
		id      string
		hasID   bool
		data    strings.Builder
		hasData bool
	)
	for s.sc.Scan() {
		line := s.sc.Text()
		if line == "" { // the end of a message
			if hasID {
				if n, err := strconv.ParseInt(id, 10, 64); err == nil {
					s.last = n
				}
			}
			if !hasData {
				hasID = false
				continue // a lone id (the stream's position) or a message without data
			}
			var ev Event
			if err := json.Unmarshal([]byte(data.String()), &ev); err != nil {
				return Event{}, fmt.Errorf("client: event stream: decode event %q: %w", data.String(), err)
			}
			if ev.Seq == 0 && hasID {
				ev.Seq = s.last
			}
			if ev.Seq > 0 {
				s.last = ev.Seq
			}
			return ev, nil
		}
		if strings.HasPrefix(line, ":") {
			continue // a comment: the worker's keep-alive
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			id, hasID = value, true
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		}
		// event and retry are not used: every event is a task event, and Watch has its own back-off.
	}
	if err := s.ctx.Err(); err != nil {
		return Event{}, err
	}
	if err := s.sc.Err(); err != nil {
		return Event{}, fmt.Errorf("client: event stream: %w", err)
	}
	return Event{}, io.EOF
}

// LastEventID returns the number of the last event the stream delivered (or the position the
// worker announced), or the lastEventID it was opened with before any.
func (s *EventStream) LastEventID() int64 { return s.last }

// Close closes the stream.
func (s *EventStream) Close() error {
	err := s.body.Close()
	s.cancel()
	return err
}

// Watch calls fn with each event of the worker's event stream, from after lastEventID (as Events
// takes it), until ctx is done or fn returns an error, and returns that error. When the stream
// breaks, or the worker cannot be reached, it opens it again after a back-off (up to 5 s), resuming
// after the last event it delivered (Last-Event-ID), so that fn misses nothing the worker still
// keeps and sees nothing twice. When the worker cannot replay what was missed (it restarted while
// the stream was down, or too much happened), fn gets an event of Type EventReset instead and
// should read the tasks again; Watch goes on after it. It gives up on an answer that retrying will not change: any error
// answer but an EUNAVAILABLE one (503, 502, 504, 408, 429), such as a 401 or a 404.
func (c *Client) Watch(ctx context.Context, lastEventID int64, fn func(Event) error) error {
	const (
		minBackoff = 100 * time.Millisecond
		maxBackoff = 5 * time.Second
	)
	backoff := minBackoff
	last := lastEventID
	for {
		s, err := c.Events(ctx, last)
		if err == nil {
			backoff = minBackoff
			err = c.drain(s, &last, fn)
			s.Close()
			var fnErr *callbackError
			if errors.As(err, &fnErr) {
				return fnErr.err
			}
		} else {
			var e *Error
			if errors.As(err, &e) && e.Code != task.EUNAVAILABLE {
				return err // a 4xx, or a 500: retrying will not change it
			}
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// callbackError marks an error returned by Watch's fn.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// drain hands the events of s to fn until the stream ends or breaks, or fn fails, and then sets
// *last to the stream's position.
func (c *Client) drain(s *EventStream, last *int64, fn func(Event) error) error {
	defer func() { *last = s.LastEventID() }()
	for {
		ev, err := s.Next()
		if err != nil {
			return err
		}
		if err := fn(ev); err != nil {
			return &callbackError{err: err}
		}
	}
}
