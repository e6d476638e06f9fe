package boltstore_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/boltstore"
)

// The write benchmarks measure what a write costs a worker: one bbolt transaction and, unless
// NoSync, its fsyncs. Compare sync with nosync to see the disk's share.

var syncModes = []struct {
	name string
	opts boltstore.Options
}{
	{"sync", boltstore.Options{}},
	{"nosync", boltstore.Options{NoSync: true}},
}

// BenchmarkPut updates one task, as the worker loop does on every state change.
func BenchmarkPut(b *testing.B) {
	for _, m := range syncModes {
		b.Run(m.name, func(b *testing.B) {
			s := openPath(b, filepath.Join(b.TempDir(), boltstore.FileName), m.opts)
			x := fullTask("a")
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				x.RestartCount = i
				if err := s.Put(x); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAccept accepts a new task with its start order, as a POST of a new task does, and
// marks the order done, as applying it does; it reports the two separately.
func BenchmarkAccept(b *testing.B) {
	for _, m := range syncModes {
		b.Run(m.name, func(b *testing.B) {
			s := openPath(b, filepath.Join(b.TempDir(), boltstore.FileName), m.opts)
			b.ReportAllocs()
			for b.Loop() {
				x := fullTask("a")
				if _, err := s.Accept(&x, startOrder(x)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(m.name+"/done", func(b *testing.B) {
			s := openPath(b, filepath.Join(b.TempDir(), boltstore.FileName), m.opts)
			x := fullTask("a")
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				o, err := s.Accept(nil, task.Order{Kind: task.OrderStop, TaskID: x.ID})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := s.Done(o.Seq); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGet reads a task among 1000: memory only.
func BenchmarkGet(b *testing.B) {
	s := openPath(b, filepath.Join(b.TempDir(), boltstore.FileName), boltstore.Options{NoSync: true})
	var x task.Task
	for i := range 1000 {
		x = fullTask(fmt.Sprint(i))
		mustPut(b, s, x)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := s.Get(x.ID); !ok {
			b.Fatal("no task")
		}
	}
}

// BenchmarkOpen opens a file of 1000 tasks and 1000 orders: what a worker's start costs.
func BenchmarkOpen(b *testing.B) {
	path := filepath.Join(b.TempDir(), boltstore.FileName)
	s := openPath(b, path, boltstore.Options{NoSync: true})
	for i := range 1000 {
		x := fullTask(fmt.Sprint(i))
		if _, err := s.Accept(&x, startOrder(x)); err != nil {
			b.Fatal(err)
		}
	}
	s.Close()
	b.ReportAllocs()
	for b.Loop() {
		s, err := boltstore.Open(path, boltstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if s.Len() != 1000 {
			b.Fatalf("Len: got %d, want 1000", s.Len())
		}
		s.Close()
	}
}
