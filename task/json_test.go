package task_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/google/uuid"
)

// checkAppendJSON compares AppendJSON of tk with what encoding/json writes of it: the same bytes,
// or an error from both. On an error AppendJSON must leave what it was given as it was.
func checkAppendJSON(tb testing.TB, tk *task.Task) []byte {
	tb.Helper()
	var want bytes.Buffer
	wantErr := json.NewEncoder(&want).Encode(tk)
	prefix := []byte("[{},")
	got, err := task.AppendJSON(prefix, tk)
	switch {
	case (err != nil) != (wantErr != nil):
		tb.Fatalf("AppendJSON: got error %v, want encoding/json's %v; the task: %#v", err, wantErr, tk)
	case err != nil:
		if string(got) != "[{}," {
			tb.Fatalf("AppendJSON failed (%v) and returned %q, want the buffer as it was, %q", err, got, "[{},")
		}
		return nil
	case !bytes.HasPrefix(got, []byte("[{},")):
		tb.Fatalf("AppendJSON: got %q, want it to start with what it was given, %q", got, "[{},")
	}
	got = got[len("[{},"):]
	if w := bytes.TrimSuffix(want.Bytes(), []byte("\n")); !bytes.Equal(got, w) {
		tb.Fatalf("AppendJSON:\n got %s\nwant %s\n(first difference at byte %d)", got, w, firstDiff(got, w))
	}
	return got
}

// checkCompactJSON checks AppendCompactJSON of tk against full, what AppendJSON wrote of it (nil
// when AppendJSON failed): it fails where AppendJSON fails, leaving the buffer as it was; each key
// it writes is one of full's with the same value; each key of full it leaves out has a zero value;
// and the compact JSON decodes back to the task full decodes to (the two re-encoded are equal).
func checkCompactJSON(tb testing.TB, tk *task.Task, full []byte) {
	tb.Helper()
	got, err := task.AppendCompactJSON([]byte("[{},"), tk)
	if (err != nil) != (full == nil) {
		tb.Fatalf("AppendCompactJSON: got error %v, want one exactly when AppendJSON fails (it wrote %q)", err, full)
	}
	if err != nil {
		if string(got) != "[{}," {
			tb.Fatalf("AppendCompactJSON failed (%v) and returned %q, want the buffer as it was", err, got)
		}
		return
	}
	got = bytes.TrimPrefix(got, []byte("[{},"))
	var fullKeys, gotKeys map[string]json.RawMessage
	if err := json.Unmarshal(full, &fullKeys); err != nil {
		tb.Fatalf("AppendJSON wrote invalid JSON: %v", err)
	}
	if err := json.Unmarshal(got, &gotKeys); err != nil {
		tb.Fatalf("AppendCompactJSON wrote invalid JSON %s: %v", got, err)
	}
	for k, v := range gotKeys {
		if fv, ok := fullKeys[k]; !ok || !bytes.Equal(fv, v) {
			tb.Fatalf("AppendCompactJSON wrote %s: %s, AppendJSON %s", k, v, fv)
		}
	}
	zero := map[string]bool{`""`: true, `0`: true, `null`: true, `false`: true, `"0001-01-01T00:00:00Z"`: true}
	for k, v := range fullKeys {
		if _, ok := gotKeys[k]; !ok && !zero[string(v)] {
			tb.Fatalf("AppendCompactJSON left out %s, which is %s, not zero", k, v)
		}
	}
	var fromFull, fromCompact task.Task
	if err := json.Unmarshal(full, &fromFull); err != nil {
		tb.Fatalf("decode AppendJSON's: %v", err)
	}
	if err := json.Unmarshal(got, &fromCompact); err != nil {
		tb.Fatalf("decode AppendCompactJSON's: %v", err)
	}
	a, errA := task.AppendJSON(nil, &fromFull)
	b, errB := task.AppendJSON(nil, &fromCompact)
	if errA != nil || errB != nil || !bytes.Equal(a, b) {
		tb.Fatalf("decoded, the compact JSON is another task:\n got %s (%v)\nwant %s (%v)", b, errB, a, errA)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// hostileStrings are what a string of the fuzzer's task is most of the time: what JSON escapes
// (HTML's <>&, U+2028/U+2029, control bytes, DEL), invalid UTF-8 (a lone continuation byte, a
// truncated sequence, an encoded surrogate, an overlong form), and plain text.
var hostileStrings = []string{
	"", "a", "<script>alert('x')</script> & more", "\u2028\u2029", "line\u2028sep", "\xff", "a\xfeb\xff",
	"\x00\x01\x1f\x7f", "\b\f\n\r\t\v", `"quoted" \back\slash /`, "é€😀 µs", "\xed\xa0\x80", "\xe2\x80",
	"\xe2\x80\xa8\xe2\x80", "\xc0\xaf", "\xf4\x90\x80\x80", "7777/tcp", "0.0.0.0", "GREETING=hi",
	"\U0010ffff", "\ufffd", "\x80", strings.Repeat("<&>", 50),
}

var extremeInts = []int64{0, 1, -1, 42, math.MaxInt64, math.MinInt64, math.MaxInt32, math.MinInt32, 1<<53 + 1, 9}

var extremeFloats = []float64{
	0, math.Copysign(0, -1), 1, -1, 0.1, 2.5, 1e-6, 9.999999e-7, 1e-7, -1e-7, 1.5e-10, 1e20, 1e21, -1e21,
	123456789012345678901, 1e100, 5e-324, math.SmallestNonzeroFloat64, math.MaxFloat64, -math.MaxFloat64,
	123456.789, 1e-300, 0.000001234, math.NaN(), math.Inf(1), math.Inf(-1),
}

// zones are the locations a fuzzed time is in: UTC, offsets of odd minutes and seconds, the
// largest that RFC 3339 can write, and (the last three) those of 24 hours and more that it
// cannot.
var zones = []*time.Location{
	time.UTC, time.FixedZone("", 0), time.FixedZone("NPT", 5*3600+45*60), time.FixedZone("", -30*60),
	time.FixedZone("", 23*3600+59*60), time.FixedZone("", -(23*3600 + 59*60)), time.FixedZone("", 3661),
	time.FixedZone("", -1), time.FixedZone("", 24*3600), time.FixedZone("", -24*3600), time.FixedZone("", 99*3600),
}

// filler makes values from the fuzz input, one decision a byte or so; past the input's end every
// byte is 0. With full set, every value it makes is non-zero and encodable: pointers set, slices
// and maps not empty, strings not empty, numbers not 0 and finite, times in range.
type filler struct {
	tb   testing.TB
	data []byte
	full bool
}

func (f *filler) byte() byte {
	if len(f.data) == 0 {
		return 0
	}
	c := f.data[0]
	f.data = f.data[1:]
	return c
}

func (f *filler) uint64() uint64 {
	var u uint64
	for range 8 {
		u = u<<8 | uint64(f.byte())
	}
	return u
}

func (f *filler) string() string {
	c := f.byte()
	if c < 192 {
		s := hostileStrings[int(c)%len(hostileStrings)]
		if f.full && s == "" {
			s = "<full>"
		}
		return s
	}
	n := int(c-192)%24 + 1 // raw bytes from the input, whatever they are
	n = min(n, len(f.data))
	s := string(f.data[:n])
	f.data = f.data[n:]
	if f.full && s == "" {
		s = "\xff<"
	}
	return s
}

func (f *filler) int() int64 {
	c := f.byte()
	var v int64
	if c < 200 {
		v = extremeInts[int(c)%len(extremeInts)]
	} else {
		v = int64(f.uint64())
	}
	if f.full && v == 0 {
		v = 7
	}
	return v
}

func (f *filler) float() float64 {
	c := f.byte()
	var v float64
	if c < 200 {
		v = extremeFloats[int(c)%len(extremeFloats)]
	} else {
		v = math.Float64frombits(f.uint64())
	}
	if f.full && (v == 0 || math.IsNaN(v) || math.IsInf(v, 0)) {
		v = 0.25
	}
	return v
}

func (f *filler) time() time.Time {
	t := f.anyTime()
	if f.full {
		if _, err := t.MarshalJSON(); t.IsZero() || err != nil {
			t = time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("", -(23*3600+59*60)))
		}
	}
	return t
}

func (f *filler) anyTime() time.Time {
	c := f.byte()
	switch {
	case c == 0:
		return time.Time{}
	case c >= 250: // any instant at all, most far outside [0,9999]
		return time.Unix(int64(f.uint64()), int64(f.uint64()%2e9)).In(zones[int(f.byte())%len(zones)])
	}
	// Mostly a time that encodes (a task has half a dozen: one that fails fails the whole task),
	// at the edges of [0,9999] and in odd zones; one in ten can be any year and any zone.
	years := []int{2024, 0, 1, 1970, 9999, 2026, 10000, -1, -10000, 292277026596}
	year := years[int(c)%6]
	zone := zones[int(f.byte())%8]
	if c >= 224 {
		year = years[int(c)%len(years)]
		if c >= 240 {
			year = int(int16(f.uint64()))
		}
		zone = zones[int(f.byte())%len(zones)]
	}
	nsec := int(f.uint64() % 2e9) // past a second too: Date normalizes it
	switch f.byte() % 4 {
	case 0:
		nsec = 0
	case 1:
		nsec = nsec / 1e6 * 1e6 // trailing zeros, which RFC3339Nano drops
	}
	return time.Date(year, time.Month(f.byte()%14), int(f.byte()%33), int(f.byte()%25), int(f.byte()%61),
		int(f.byte()%61), nsec, zone)
}

// count is how many elements a slice or map gets: -1 for nil, else 0 to 4 (1 to 4 full).
func (f *filler) count() int {
	c := f.byte()
	if f.full {
		return int(c%4) + 1
	}
	switch c % 6 {
	case 0:
		return -1
	case 1:
		return 0
	}
	return int(c/6)%4 + 1
}

var timeType = reflect.TypeFor[time.Time]()

// fill sets v, at path in the task, from the input. It knows kinds, not fields: a field added to
// Task is filled as well, and a kind it does not know fails the test, so that it is taught.
func (f *filler) fill(v reflect.Value, path string) {
	if v.Type() == timeType {
		v.Set(reflect.ValueOf(f.time()))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			sf := v.Type().Field(i)
			if !sf.IsExported() {
				f.tb.Fatalf("%s.%s: unexported field of %s; teach the filler its type", path, sf.Name, v.Type())
			}
			f.fill(v.Field(i), path+"."+sf.Name)
		}
	case reflect.Array:
		for i := range v.Len() {
			f.fill(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Pointer:
		if !f.full && f.byte()%3 == 0 {
			return
		}
		p := reflect.New(v.Type().Elem())
		f.fill(p.Elem(), path)
		v.Set(p)
	case reflect.Slice:
		n := f.count()
		if n < 0 {
			return
		}
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			f.fill(s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		n := f.count()
		if n < 0 {
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), n)
		for range n {
			k := reflect.New(v.Type().Key()).Elem()
			f.fill(k, path+" key")
			e := reflect.New(v.Type().Elem()).Elem()
			f.fill(e, path+"[key]")
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.String:
		v.SetString(f.string())
	case reflect.Bool:
		v.SetBool(f.full || f.byte()&1 == 1)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(f.int()) // truncated to the field's size
		if f.full && v.IsZero() {
			v.SetInt(3)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(f.uint64())
		if f.full && v.IsZero() {
			v.SetUint(3)
		}
	case reflect.Float32, reflect.Float64:
		v.SetFloat(f.float())
	default:
		f.tb.Fatalf("%s: the filler does not know kind %s (%s); teach it", path, v.Kind(), v.Type())
	}
}

// fuzzTask builds a task from data, every field of it filled by reflection.
func fuzzTask(tb testing.TB, data []byte, full bool) task.Task {
	tb.Helper()
	var tk task.Task
	(&filler{tb: tb, data: data, full: full}).fill(reflect.ValueOf(&tk).Elem(), "Task")
	return tk
}

// FuzzAppendJSON builds a task from the input, every field filled by reflection with hostile
// strings, extreme numbers, odd times and zones, nil, empty and full maps and slices, nil and
// set pointers, and checks that AppendJSON writes what encoding/json writes, or fails where it
// fails, and that AppendCompactJSON reads back as the same task; the same for the task redacted. The seed corpus is the inputs below and
// testdata/fuzz/FuzzAppendJSON/.
func FuzzAppendJSON(f *testing.F) {
	f.Add([]byte{})
	for _, c := range []byte{1, 2, 3, 5, 0x80, 0xc7, 0xfa, 0xff} {
		f.Add(bytes.Repeat([]byte{c}, 600))
	}
	counting := make([]byte, 1024)
	for i := range counting {
		counting[i] = byte(i * 7)
	}
	f.Add(counting)
	r := rand.New(rand.NewPCG(15, 2028))
	for range 8 {
		b := make([]byte, 400+r.IntN(800))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tk := fuzzTask(t, data, false)
		checkCompactJSON(t, &tk, checkAppendJSON(t, &tk))
		red := tk.Redacted()
		checkCompactJSON(t, &red, checkAppendJSON(t, &red))
	})
}

// TestAppendJSONEveryField fills every field of Task, to its nested structs' fields, with a value
// that encoding/json writes (omitempty or not): a field added to Task that AppendJSON does not
// write fails here.
func TestAppendJSONEveryField(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		data := make([]byte, 2000)
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		tk := fuzzTask(t, data, true)
		v := reflect.ValueOf(tk)
		for j := range v.NumField() {
			if v.Field(j).IsZero() {
				t.Fatalf("input %d: field %s left zero by the full filler", i, v.Type().Field(j).Name)
			}
		}
		got := checkAppendJSON(t, &tk)
		checkCompactJSON(t, &tk, got)
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(got, &keys); err != nil {
			t.Fatalf("input %d: AppendJSON wrote invalid JSON: %v", i, err)
		}
		if len(keys) != v.NumField() {
			t.Fatalf("input %d: got %d keys, want one per field of Task, %d", i, len(keys), v.NumField())
		}
	}
}

func TestAppendJSONEdgeCases(t *testing.T) {
	id := uuid.MustParse("1e5a1c7e-7a1c-4d5e-9d7a-1c7e7a1c4d5e")
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name    string
		task    task.Task
		want    []string // substrings of the output
		wantErr bool
	}{
		{name: "zero", task: task.Task{}, want: []string{`{"ID":"00000000-0000-0000-0000-000000000000","ContainerID":"","Name":"","State":0,`,
			`"ExposedPorts":null,"PortBindings":null,`, `"StartTime":"0001-01-01T00:00:00Z"`, `"HostPorts":null`, `"Env":null,"Cmd":null,"ExitCode":0,"Error":""}`}},
		{name: "uuid", task: task.Task{ID: id}, want: []string{`{"ID":"1e5a1c7e-7a1c-4d5e-9d7a-1c7e7a1c4d5e",`}},
		{name: "html escaping", task: task.Task{Name: "<web> & co"}, want: []string{`"Name":"\u003cweb\u003e \u0026 co"`}},
		{name: "line and paragraph separators", task: task.Task{Error: "a\u2028b\u2029c"}, want: []string{`"Error":"a\u2028b\u2029c"`}},
		{name: "invalid UTF-8", task: task.Task{Image: "a\xffb\xe2\x80"}, want: []string{`"Image":"a\ufffdb\ufffd\ufffd"`}},
		{name: "control characters", task: task.Task{Env: []string{"\x00\x01\b\f\n\r\t\x1f\x7f\"\\"}}, want: []string{`"Env":["\u0000\u0001\b\f\n\r\t\u001f` + "\x7f" + `\"\\"]`}},
		{name: "empty slices are []", task: task.Task{Env: []string{}, Cmd: []string{}}, want: []string{`"Env":[],"Cmd":[]`}},
		{name: "empty omitempty slices are left out", task: task.Task{CapAdd: []string{}, Events: []task.Record{}}, want: []string{`"Error":""}`}},
		{name: "empty maps are {}", task: task.Task{ExposedPorts: task.PortSet{}, PortBindings: map[string]string{}, HostPorts: task.PortMap{}},
			want: []string{`"ExposedPorts":{},"PortBindings":{}`, `"HostPorts":{}`}},
		{name: "map keys sorted", task: task.Task{ExposedPorts: task.PortSet{"9000/udp": {}, "7777/tcp": {}, "80/tcp": {}},
			PortBindings: map[string]string{"b": "2", "a": "1", "<": "0"},
			HostPorts:    task.PortMap{"80/tcp": nil, "7777/tcp": {{HostIP: "::", HostPort: "1"}}}},
			want: []string{`"ExposedPorts":{"7777/tcp":{},"80/tcp":{},"9000/udp":{}},"PortBindings":{"\u003c":"0","a":"1","b":"2"}`,
				`"HostPorts":{"7777/tcp":[{"HostIp":"::","HostPort":"1"}],"80/tcp":null}`}},
		{name: "float 'f' below 1e21", task: task.Task{Cpu: 123456789012345678901 / 10}, want: []string{`"Cpu":12345678901234567000,`}},
		{name: "float 'e' from 1e21", task: task.Task{Cpu: 1e21}, want: []string{`"Cpu":1e+21,`}},
		{name: "float 'e' below 1e-6, exponent without its zero", task: task.Task{Cpu: 1e-7}, want: []string{`"Cpu":1e-7,`}},
		{name: "float 1e-6 is 'f'", task: task.Task{Cpu: 1e-6}, want: []string{`"Cpu":0.000001,`}},
		{name: "negative zero", task: task.Task{Cpu: math.Copysign(0, -1)}, want: []string{`"Cpu":-0,`}},
		{name: "NaN", task: task.Task{Cpu: math.NaN()}, wantErr: true},
		{name: "+Inf", task: task.Task{Cpu: math.Inf(1)}, wantErr: true},
		{name: "-Inf", task: task.Task{Cpu: math.Inf(-1)}, wantErr: true},
		{name: "extreme ints", task: task.Task{Memory: math.MinInt64, Disk: math.MaxInt64, State: task.State(-3)},
			want: []string{`"State":-3,`, `"Memory":-9223372036854775808,"Disk":9223372036854775807,`}},
		{name: "nanoseconds without trailing zeros", task: task.Task{StartTime: time.Date(2024, 5, 1, 12, 0, 0, 100_000_000, time.UTC)},
			want: []string{`"StartTime":"2024-05-01T12:00:00.1Z"`}},
		{name: "odd zone", task: task.Task{FinishTime: time.Date(2024, 5, 1, 12, 0, 0, 1, time.FixedZone("", 5*3600+45*60+30))},
			want: []string{`"FinishTime":"2024-05-01T12:00:00.000000001+05:45"`}},
		{name: "year 9999", task: task.Task{StartTime: time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)}, want: []string{`"9999-12-31T23:59:59Z"`}},
		{name: "year 10000", task: task.Task{StartTime: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, wantErr: true},
		{name: "year -1", task: task.Task{FinishTime: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}, wantErr: true},
		{name: "zone of 24 hours", task: task.Task{StartTime: time.Date(2024, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600))}, wantErr: true},
		{name: "year out of range in a record", task: task.Task{Events: []task.Record{{Time: at}, {Time: time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)}}}, wantErr: true},
		{name: "year out of range in the last check", task: task.Task{LastHealthCheck: &task.HealthResult{Time: time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC)}}, wantErr: true},
		{name: "records", task: task.Task{Events: []task.Record{{Time: at, Type: task.RecordReceived}, {Time: at, Type: task.RecordFailed, Message: "<exit 3>"}}},
			want: []string{`,"Events":[{"Time":"2024-05-01T12:00:00Z","Type":"Received"},{"Time":"2024-05-01T12:00:00Z","Type":"Failed","Message":"\u003cexit 3\u003e"}]}`}},
		{name: "restart spec", task: task.Task{Restart: &task.RestartSpec{Delay: task.Duration(1500 * time.Millisecond), MaxDelay: task.Duration(time.Microsecond)}},
			want: []string{`,"Restart":{"MaxAttempts":0,"Delay":"1.5s","MaxDelay":"1µs","ResetAfter":"0s"}`}},
		{name: "empty health spec", task: task.Task{Health: &task.HealthSpec{}}, want: []string{`,"Health":{}`}},
		{name: "health spec", task: task.Task{Health: &task.HealthSpec{Port: 7777, Command: []string{}, Timeout: task.Duration(-time.Second)}},
			want: []string{`,"Health":{"Port":7777,"Timeout":"-1s"}`}},
		{name: "health spec's last field", task: task.Task{Health: &task.HealthSpec{StartPeriod: 1}}, want: []string{`,"Health":{"StartPeriod":"1ns"}`}},
		{name: "status fields", task: task.Task{HealthStatus: task.HealthHealthy, Paused: true, Privileged: true, RestartStreak: 2,
			LastHealthCheck: &task.HealthResult{Time: at, Healthy: true, Output: "200 OK"}, Pull: &task.PullProgress{Layers: 3, BytesTotal: 1 << 40}},
			want: []string{`"Privileged":true`, `"HealthStatus":"healthy","LastHealthCheck":{"Time":"2024-05-01T12:00:00Z","Healthy":true,"Output":"200 OK","FailingStreak":0},"Pull":{"Layers":3,"LayersDone":0,"Bytes":0,"BytesTotal":1099511627776},"RestartStreak":2,"Paused":true}`}},
		{name: "registry auth, when the caller has not redacted it", task: task.Task{RegistryAuth: &task.RegistryAuth{Username: "u", Password: "p&"}},
			want: []string{`"RegistryAuth":{"Username":"u","Password":"p\u0026"}`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := checkAppendJSON(t, &c.task)
			checkCompactJSON(t, &c.task, got)
			if c.wantErr {
				if got != nil {
					t.Fatalf("AppendJSON: got %s, want an error", got)
				}
				return
			}
			for _, w := range c.want {
				if !bytes.Contains(got, []byte(w)) {
					t.Errorf("AppendJSON: got %s, want it to contain %s", got, w)
				}
			}
		})
	}
}

func TestAppendJSONRedactedHasNoAuth(t *testing.T) {
	tk := task.Task{RegistryAuth: &task.RegistryAuth{Username: "user", Password: "secret"}}
	red := tk.Redacted()
	got := checkAppendJSON(t, &red)
	if bytes.Contains(got, []byte("secret")) || bytes.Contains(got, []byte("RegistryAuth")) {
		t.Fatalf("AppendJSON of the redacted task: got %s, want no RegistryAuth", got)
	}
}
