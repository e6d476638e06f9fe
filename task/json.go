package task

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// AppendJSON appends t as JSON to b and returns the extended buffer: byte for byte what
// json.Marshal(t) writes (and json.Encoder.Encode, less its newline), HTML escaping included,
// without reflection and without the compaction encoding/json applies to the output of
// time.Time's and Duration's MarshalJSON. GET /tasks writes a thousand tasks a request with it.
//
// It fails where encoding/json fails: a Cpu that is NaN or infinite, a time whose year is outside
// [0,9999] or whose zone offset is 24 hours or more. It then returns b as it was, and an error.
//
// Every field of Task is written, RegistryAuth too when it is set: redacting is the caller's
// ([Task.Redacted]). FuzzAppendJSON fills every field of Task by reflection and compares with
// encoding/json, so a field added to Task and not written here fails it.
func AppendJSON(b []byte, t *Task) ([]byte, error) { return appendOrKeep(b, t, false) }

// AppendCompactJSON is AppendJSON less the fields AppendJSON writes at their zero value (an
// empty string, 0, false, a nil map or slice, the zero time): what json.Unmarshal reads back,
// into a zero Task, as the same task. A non-nil empty map or slice is written, so it reads back
// non-nil. The worker's durable store keeps tasks so: a task that has failed to start is about
// a quarter smaller than AppendJSON writes it.
func AppendCompactJSON(b []byte, t *Task) ([]byte, error) { return appendOrKeep(b, t, true) }

// appendOrKeep appends t to b, or, when it cannot be written, returns b as it was and the error.
func appendOrKeep(b []byte, t *Task, compact bool) ([]byte, error) {
	n0 := len(b)
	b, err := appendTask(b, t, compact)
	if err != nil {
		return b[:n0], err
	}
	return b, nil
}

// appendTask writes t; compact leaves out the fields that are not omitempty when they are zero.
func appendTask(b []byte, t *Task, compact bool) ([]byte, error) {
	var err error
	b = append(b, `{"ID":`...)
	b = appendUUID(b, t.ID)
	if compact {
		return appendCompactFields(b, t)
	}
	b = append(b, `,"ContainerID":`...)
	b = appendString(b, t.ContainerID)
	b = append(b, `,"Name":`...)
	b = appendString(b, t.Name)
	b = append(b, `,"State":`...)
	b = strconv.AppendInt(b, int64(t.State), 10)
	b = append(b, `,"Image":`...)
	b = appendString(b, t.Image)
	b = append(b, `,"Cpu":`...)
	if b, err = appendFloat(b, t.Cpu); err != nil {
		return b, err
	}
	b = append(b, `,"Memory":`...)
	b = strconv.AppendInt(b, t.Memory, 10)
	b = append(b, `,"Disk":`...)
	b = strconv.AppendInt(b, t.Disk, 10)
	b = append(b, `,"ExposedPorts":`...)
	b = appendPortSet(b, t.ExposedPorts)
	b = append(b, `,"PortBindings":`...)
	b = appendStringMap(b, t.PortBindings)
	b = append(b, `,"RestartPolicy":`...)
	b = appendString(b, t.RestartPolicy)
	b = append(b, `,"StartTime":`...)
	if b, err = appendTime(b, t.StartTime); err != nil {
		return b, err
	}
	b = append(b, `,"FinishTime":`...)
	if b, err = appendTime(b, t.FinishTime); err != nil {
		return b, err
	}
	b = append(b, `,"HostPorts":`...)
	b = appendPortMap(b, t.HostPorts)
	b = append(b, `,"HealthCheck":`...)
	b = appendString(b, t.HealthCheck)
	b = append(b, `,"RestartCount":`...)
	b = strconv.AppendInt(b, int64(t.RestartCount), 10)
	b = append(b, `,"Env":`...)
	b = appendStrings(b, t.Env)
	b = append(b, `,"Cmd":`...)
	b = appendStrings(b, t.Cmd)
	b = append(b, `,"ExitCode":`...)
	b = strconv.AppendInt(b, int64(t.ExitCode), 10)
	b = append(b, `,"Error":`...)
	b = appendString(b, t.Error)
	return appendOmitempty(b, t)
}

// appendCompactFields writes, after the ID, the fields AppendJSON always writes, each only when
// it is not zero, then the omitempty ones.
func appendCompactFields(b []byte, t *Task) ([]byte, error) {
	var err error
	str := func(name, v string) {
		if v != "" {
			b = append(b, name...)
			b = appendString(b, v)
		}
	}
	num := func(name string, v int64) {
		if v != 0 {
			b = append(b, name...)
			b = strconv.AppendInt(b, v, 10)
		}
	}
	str(`,"ContainerID":`, t.ContainerID)
	str(`,"Name":`, t.Name)
	num(`,"State":`, int64(t.State))
	str(`,"Image":`, t.Image)
	if t.Cpu != 0 || math.Signbit(t.Cpu) {
		b = append(b, `,"Cpu":`...)
		if b, err = appendFloat(b, t.Cpu); err != nil {
			return b, err
		}
	}
	num(`,"Memory":`, t.Memory)
	num(`,"Disk":`, t.Disk)
	if t.ExposedPorts != nil {
		b = append(b, `,"ExposedPorts":`...)
		b = appendPortSet(b, t.ExposedPorts)
	}
	if t.PortBindings != nil {
		b = append(b, `,"PortBindings":`...)
		b = appendStringMap(b, t.PortBindings)
	}
	str(`,"RestartPolicy":`, t.RestartPolicy)
	for _, f := range [...]struct {
		name string
		t    time.Time
	}{{`,"StartTime":`, t.StartTime}, {`,"FinishTime":`, t.FinishTime}} {
		if f.t != (time.Time{}) {
			b = append(b, f.name...)
			if b, err = appendTime(b, f.t); err != nil {
				return b, err
			}
		}
	}
	if t.HostPorts != nil {
		b = append(b, `,"HostPorts":`...)
		b = appendPortMap(b, t.HostPorts)
	}
	str(`,"HealthCheck":`, t.HealthCheck)
	num(`,"RestartCount":`, int64(t.RestartCount))
	if t.Env != nil {
		b = append(b, `,"Env":`...)
		b = appendStrings(b, t.Env)
	}
	if t.Cmd != nil {
		b = append(b, `,"Cmd":`...)
		b = appendStrings(b, t.Cmd)
	}
	num(`,"ExitCode":`, int64(t.ExitCode))
	str(`,"Error":`, t.Error)
	return appendOmitempty(b, t)
}

// appendOmitempty writes the omitempty fields, in the struct's order, and closes the object.
func appendOmitempty(b []byte, t *Task) ([]byte, error) {
	var err error
	if t.Restart != nil {
		b = append(b, `,"Restart":`...)
		b = appendRestartSpec(b, t.Restart)
	}
	if t.Health != nil {
		b = append(b, `,"Health":`...)
		b = appendHealthSpec(b, t.Health)
	}
	if t.PullPolicy != "" {
		b = append(b, `,"PullPolicy":`...)
		b = appendString(b, t.PullPolicy)
	}
	if t.RegistryAuth != nil {
		b = append(b, `,"RegistryAuth":{"Username":`...)
		b = appendString(b, t.RegistryAuth.Username)
		b = append(b, `,"Password":`...)
		b = appendString(b, t.RegistryAuth.Password)
		b = append(b, '}')
	}
	if t.MemoryReservation != 0 {
		b = append(b, `,"MemoryReservation":`...)
		b = strconv.AppendInt(b, t.MemoryReservation, 10)
	}
	if t.PidsLimit != 0 {
		b = append(b, `,"PidsLimit":`...)
		b = strconv.AppendInt(b, t.PidsLimit, 10)
	}
	if t.StopTimeout != 0 {
		b = append(b, `,"StopTimeout":`...)
		b = strconv.AppendInt(b, int64(t.StopTimeout), 10)
	}
	if t.StopSignal != "" {
		b = append(b, `,"StopSignal":`...)
		b = appendString(b, t.StopSignal)
	}
	if t.Privileged {
		b = append(b, `,"Privileged":true`...)
	}
	if t.NetworkMode != "" {
		b = append(b, `,"NetworkMode":`...)
		b = appendString(b, t.NetworkMode)
	}
	if t.PidMode != "" {
		b = append(b, `,"PidMode":`...)
		b = appendString(b, t.PidMode)
	}
	if len(t.CapAdd) > 0 {
		b = append(b, `,"CapAdd":`...)
		b = appendStrings(b, t.CapAdd)
	}
	if len(t.Devices) > 0 {
		b = append(b, `,"Devices":`...)
		b = appendStrings(b, t.Devices)
	}
	if len(t.Binds) > 0 {
		b = append(b, `,"Binds":`...)
		b = appendStrings(b, t.Binds)
	}
	if t.HealthStatus != "" {
		b = append(b, `,"HealthStatus":`...)
		b = appendString(b, t.HealthStatus)
	}
	if r := t.LastHealthCheck; r != nil {
		b = append(b, `,"LastHealthCheck":{"Time":`...)
		if b, err = appendTime(b, r.Time); err != nil {
			return b, err
		}
		b = append(b, `,"Healthy":`...)
		b = strconv.AppendBool(b, r.Healthy)
		b = append(b, `,"Output":`...)
		b = appendString(b, r.Output)
		b = append(b, `,"FailingStreak":`...)
		b = strconv.AppendInt(b, int64(r.FailingStreak), 10)
		b = append(b, '}')
	}
	if p := t.Pull; p != nil {
		b = append(b, `,"Pull":{"Layers":`...)
		b = strconv.AppendInt(b, int64(p.Layers), 10)
		b = append(b, `,"LayersDone":`...)
		b = strconv.AppendInt(b, int64(p.LayersDone), 10)
		b = append(b, `,"Bytes":`...)
		b = strconv.AppendInt(b, p.Bytes, 10)
		b = append(b, `,"BytesTotal":`...)
		b = strconv.AppendInt(b, p.BytesTotal, 10)
		b = append(b, '}')
	}
	if t.LastEvent != "" {
		b = append(b, `,"LastEvent":`...)
		b = appendString(b, t.LastEvent)
	}
	if t.RestartStreak != 0 {
		b = append(b, `,"RestartStreak":`...)
		b = strconv.AppendInt(b, int64(t.RestartStreak), 10)
	}
	if t.Unconfirmed != "" {
		b = append(b, `,"Unconfirmed":`...)
		b = appendString(b, t.Unconfirmed)
	}
	if t.Paused {
		b = append(b, `,"Paused":true`...)
	}
	if len(t.Events) > 0 {
		b = append(b, `,"Events":[`...)
		for i := range t.Events {
			r := &t.Events[i]
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"Time":`...)
			if b, err = appendTime(b, r.Time); err != nil {
				return b, err
			}
			b = append(b, `,"Type":`...)
			b = appendString(b, r.Type)
			if r.Message != "" {
				b = append(b, `,"Message":`...)
				b = appendString(b, r.Message)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}'), nil
}

func appendRestartSpec(b []byte, r *RestartSpec) []byte {
	b = append(b, `{"MaxAttempts":`...)
	b = strconv.AppendInt(b, int64(r.MaxAttempts), 10)
	b = append(b, `,"Delay":`...)
	b = appendDuration(b, r.Delay)
	b = append(b, `,"MaxDelay":`...)
	b = appendDuration(b, r.MaxDelay)
	b = append(b, `,"ResetAfter":`...)
	b = appendDuration(b, r.ResetAfter)
	return append(b, '}')
}

// appendHealthSpec writes h, every field of which is omitempty: "{}" when all are zero.
func appendHealthSpec(b []byte, h *HealthSpec) []byte {
	b = append(b, '{')
	n := len(b)
	sep := func(b []byte, key string) []byte {
		if len(b) > n {
			b = append(b, ',')
		}
		return append(b, key...)
	}
	if h.Type != "" {
		b = appendString(sep(b, `"Type":`), h.Type)
	}
	if h.Path != "" {
		b = appendString(sep(b, `"Path":`), h.Path)
	}
	if h.Port != 0 {
		b = strconv.AppendInt(sep(b, `"Port":`), int64(h.Port), 10)
	}
	if len(h.Command) > 0 {
		b = appendStrings(sep(b, `"Command":`), h.Command)
	}
	if h.Interval != 0 {
		b = appendDuration(sep(b, `"Interval":`), h.Interval)
	}
	if h.Timeout != 0 {
		b = appendDuration(sep(b, `"Timeout":`), h.Timeout)
	}
	if h.Retries != 0 {
		b = strconv.AppendInt(sep(b, `"Retries":`), int64(h.Retries), 10)
	}
	if h.StartPeriod != 0 {
		b = appendDuration(sep(b, `"StartPeriod":`), h.StartPeriod)
	}
	return append(b, '}')
}

// appendDuration writes d as Duration.MarshalJSON does: its String, as a JSON string.
func appendDuration(b []byte, d Duration) []byte {
	return appendString(b, time.Duration(d).String())
}

// appendTime writes t as time.Time.MarshalJSON does: RFC 3339 with nanoseconds, quoted. Its
// AppendText is MarshalJSON's text less the quotes, and fails where MarshalJSON fails. Its
// output is ASCII digits, letters and punctuation that need no escaping.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	out, err := t.AppendText(append(b, '"'))
	if err != nil { // out is nil
		return b, errors.New("Time.MarshalJSON: " + strings.TrimPrefix(err.Error(), "Time.AppendText: "))
	}
	return append(out, '"'), nil
}

// appendFloat writes f as encoding/json writes a float64: as ES6 formats a number, 'f' between
// 1e-6 and 1e21 and 'e' outside, without a leading zero in the exponent.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, errors.New("json: unsupported value: " + strconv.FormatFloat(f, 'g', -1, 64))
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 becomes e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

// appendUUID writes id as its MarshalText does, quoted.
func appendUUID(b []byte, id uuid.UUID) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hex[c>>4], hex[c&0xf])
	}
	return append(b, '"')
}

// appendStrings writes a []string: null when nil, [] when empty.
func appendStrings(b []byte, s []string) []byte {
	return appendSlice(b, s, appendString)
}

// appendSlice appends s as encoding/json writes a slice: null when nil, [] when empty, else
// each element by value.
func appendSlice[V any](b []byte, s []V, value func([]byte, V) []byte) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, v := range s {
		if i > 0 {
			b = append(b, ',')
		}
		b = value(b, v)
	}
	return append(b, ']')
}

// sortedKeys returns m's keys in the order encoding/json writes them: sorted as strings.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func appendPortSet(b []byte, m PortSet) []byte {
	return appendMap(b, m, func(b []byte, _ struct{}) []byte { return append(b, "{}"...) })
}

func appendStringMap(b []byte, m map[string]string) []byte {
	return appendMap(b, m, appendString)
}

func appendPortMap(b []byte, m PortMap) []byte {
	return appendMap(b, m, appendBindings)
}

// appendMap appends m as encoding/json writes a map with string keys: null when nil, else its
// keys sorted, each value by value.
func appendMap[V any](b []byte, m map[string]V, value func([]byte, V) []byte) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	b = append(b, '{')
	if len(m) == 1 {
		for k, v := range m { // the usual case: no slice of keys to sort
			b = appendString(b, k)
			b = append(b, ':')
			b = value(b, v)
		}
		return append(b, '}')
	}
	for i, k := range sortedKeys(m) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = value(b, m[k])
	}
	return append(b, '}')
}

func appendBindings(b []byte, s []PortBinding) []byte {
	return appendSlice(b, s, func(b []byte, p PortBinding) []byte {
		b = append(b, `{"HostIp":`...)
		b = appendString(b, p.HostIP)
		b = append(b, `,"HostPort":`...)
		b = appendString(b, p.HostPort)
		return append(b, '}')
	})
}

// appendString writes s as a JSON string as encoding/json does with HTML escaping on (its
// default): ", \ and the control characters escaped (\b \f \n \r \t short, the others \u00XX),
// <, > and & as \u003c \u003e \u0026, U+2028 and U+2029 as \u2028 \u2029, and each byte of
// invalid UTF-8 as \ufffd.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// jsonSafe holds the ASCII bytes a JSON string written with HTML escaping carries as they are:
// every printable one (DEL too) but ", \, <, > and &.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = true
	}
	for _, c := range `"\<>&` {
		t[c] = false
	}
	return t
}()
