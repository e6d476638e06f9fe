package boltstore

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unique"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/taskindex"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// Get returns a copy of the task with the given ID, and whether there is one. It reads memory
// only.
func (s *Store) Get(id uuid.UUID) (task.Task, bool) {
	s.mu.RLock()
	e, ok := s.index.Get(id)
	s.mu.RUnlock()
	if !ok {
		return task.Task{}, false
	}
	return e.Task.Clone(), true // the stored task is immutable: cloning it needs no lock
}

// List returns copies of all tasks, in the order they were first stored, which a reopen keeps.
// It reads memory only.
func (s *Store) List() []task.Task {
	list := s.Snapshot(nil)
	for i := range list {
		list[i] = list[i].Clone()
	}
	return list
}

// Snapshot appends all tasks to dst, in List's order, as shallow copies, and returns the extended
// slice: they share the stored tasks' maps and slices, which no one writes (a Put stores a new
// task) and the caller must not write.
// It reads memory only.
func (s *Store) Snapshot(dst []task.Task) []task.Task {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index.Snapshot(dst)
}

// Refs appends pointers to the stored tasks to dst, in List's order, and returns the extended
// slice. The tasks are immutable (a Put stores a new one): no one may write through them. It
// reads memory only.
func (s *Store) Refs(dst []*task.Task) []*task.Task {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index.Refs(dst)
}

// Len returns the number of tasks stored. It reads memory only.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index.Len()
}

// Count returns the number of tasks stored in state st, in O(1). It reads memory only.
func (s *Store) Count(st task.State) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index.Count(st)
}

// Claimed returns what the tasks that have not ended claim, leaving out the task except, in
// O(1). It reads memory only.
func (s *Store) Claimed(except uuid.UUID) taskindex.Claims {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index.Claimed(except)
}

// Orders returns copies of the orders not yet done, in the order they were accepted. It reads
// memory only.
func (s *Store) Orders() []task.Order {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]task.Order, 0, len(s.orders))
	for _, o := range s.orders {
		out = append(out, cloneOrder(o))
	}
	return out
}

// Seen returns the task an event ID was accepted for, and whether it was. It reads memory only.
func (s *Store) Seen(eventID uuid.UUID) (uuid.UUID, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index.Seen(eventID)
}

// Put stores a copy of t, replacing any task with its ID; a replaced task keeps its place in List.
// It returns once the file has it, and fails, changing nothing, when t cannot be encoded or written.
//
// The stored copy is t as read back from the file, so a task reads the same before and after a
// reopen: times lose their monotonic clock reading, and empty slices of omitempty fields become nil.
func (s *Store) Put(t task.Task) error {
	var st taskindex.Entry
	err := s.commit(func(tx *bolt.Tx) error {
		var err error
		st, err = s.putTask(tx, t)
		return err
	}, func() { s.setTask(st) })
	if err != nil {
		return fmt.Errorf("store task %s in %s: %w", t.ID, s.path, err)
	}
	return nil
}

// Delete forgets the task with the given ID and the event IDs accepted for it; an unknown ID is
// not an error. Orders for the task stay until they are done. It returns once the file has
// forgotten them, and fails, changing nothing, when it cannot write the file.
func (s *Store) Delete(id uuid.UUID) error {
	s.mu.RLock()
	_, known := s.index.Get(id)
	s.mu.RUnlock()
	if !known {
		return nil
	}
	var events []uuid.UUID
	err := s.commit(func(tx *bolt.Tx) error {
		if _, known = s.index.Get(id); !known {
			return nil
		}
		events = s.index.EventsOf(id)
		if err := tx.Bucket(bucketTasks).Delete(id[:]); err != nil {
			return err
		}
		seen := tx.Bucket(bucketSeen)
		for _, ev := range events {
			if err := seen.Delete(ev[:]); err != nil {
				return err
			}
		}
		return nil
	}, func() {
		if known {
			s.index.Delete(id)
		}
	})
	if err != nil {
		return fmt.Errorf("delete task %s from %s: %w", id, s.path, err)
	}
	return nil
}

// Accept records an accepted order in one transaction: t when it is not nil (stored as Put stores
// it), the order with its Seq assigned, and, when the order has an Event, that event's ID as seen
// for o.TaskID. It returns a copy of the stored order once the file has all of it, and fails,
// changing nothing, when any of it cannot be encoded or written.
func (s *Store) Accept(t *task.Task, o task.Order) (task.Order, error) {
	var (
		st  taskindex.Entry
		got task.Order // o as it will read back
	)
	err := s.commit(func(tx *bolt.Tx) error {
		if t != nil {
			var err error
			if st, err = s.putTask(tx, *t); err != nil {
				return err
			}
		}
		b := tx.Bucket(bucketOrders)
		// Orders are keyed by their Seq, so every Put appends: pages split full, not half full
		// (bbolt's default, for keys put in any order), which is what a burst of 10,000 orders
		// costs the file, and the file's pages the worker's memory map. (As etcd does for its
		// append-only keys.) It is not kept across transactions.
		b.FillPercent = appendFill
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		o.Seq = seq
		data, err := json.Marshal(o)
		if err != nil {
			return fmt.Errorf("encode order: %w", err)
		}
		got = task.Order{}
		if err := json.Unmarshal(data, &got); err != nil {
			return fmt.Errorf("decode order: %w", err)
		}
		if err := b.Put(seqKey(seq), data); err != nil {
			return err
		}
		if got.Event != nil {
			if err := tx.Bucket(bucketSeen).Put(got.Event.ID[:], got.TaskID[:]); err != nil {
				return err
			}
		}
		return nil
	}, func() {
		if t != nil {
			s.setTask(st)
		}
		s.orders = append(s.orders, got) // commits apply in Seq order
		if got.Event != nil {
			s.index.See(got.Event.ID, got.TaskID)
		}
	})
	if err != nil {
		return task.Order{}, fmt.Errorf("store an order for task %s in %s: %w", o.TaskID, s.path, err)
	}
	return cloneOrder(got), nil
}

// Done forgets the order with the given Seq once it has been applied; an unknown Seq is not an
// error. It returns once the file has forgotten it, and fails, changing nothing, when it cannot
// write the file.
func (s *Store) Done(seq uint64) error {
	s.mu.RLock()
	_, known := taskindex.FindOrder(s.orders, seq)
	s.mu.RUnlock()
	if !known {
		return nil
	}
	err := s.commit(func(tx *bolt.Tx) error {
		if _, ok := taskindex.FindOrder(s.orders, seq); !ok {
			return nil
		}
		return tx.Bucket(bucketOrders).Delete(seqKey(seq))
	}, func() {
		s.orders = shrunk(taskindex.DeleteOrder(s.orders, seq))
	})
	if err != nil {
		return fmt.Errorf("forget order %d in %s: %w", seq, s.path, err)
	}
	return nil
}

// Close closes the database file and releases its lock. The store must not be used after; its
// writes fail. Close fails when bbolt cannot close the file.
func (s *Store) Close() error {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close database %s: %w", s.path, err)
	}
	return nil
}

// write is one write waiting to be committed.
type write struct {
	tx    func(*bolt.Tx) error // writes to the file; it may run more than once
	apply func()               // changes memory once the transaction has committed
	err   error
	done  chan struct{} // closed once committed, or failed
	lead  chan struct{} // closed when this write's writer is to commit the writes queued
}

// commit writes with tx, in a transaction it may share with other writes made at the same
// time, and once that has committed runs apply under mu. tx and apply run in the goroutine of
// the writer committing the group, which is the only one to change memory: they may read the
// in-memory fields without mu. Writes commit, and apply, in the order they were queued.
//
// A writer that finds no commit under way commits its write at once. Writes made meanwhile
// queue, and when the commit is done the first of them commits them all, in one transaction.
// (bbolt's own DB.Batch waits up to MaxBatchDelay, 10 ms, for company, which a write made alone
// would pay on every step of a task's start.)
func (s *Store) commit(tx func(*bolt.Tx) error, apply func()) error {
	w := &write{tx: tx, apply: apply, done: make(chan struct{}), lead: make(chan struct{})}
	s.qmu.Lock()
	s.queue = append(s.queue, w)
	if s.committer {
		s.qmu.Unlock()
		select {
		case <-w.done:
			return w.err
		case <-w.lead:
		}
		s.qmu.Lock()
	}
	s.committer = true
	group := s.queue
	s.queue = nil
	s.qmu.Unlock()
	s.run(group)
	s.qmu.Lock()
	if len(s.queue) > 0 {
		close(s.queue[0].lead) // its writer commits what queued meanwhile
	} else {
		s.committer = false
	}
	s.qmu.Unlock()
	return w.err
}

// run commits a group of writes in one transaction. When one of them fails, the transaction
// is rolled back and each write is committed on its own, so that only the failing one fails.
func (s *Store) run(group []*write) {
	s.cmu.Lock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		s.batchSeq = nil
		for _, w := range group {
			if err := w.tx(tx); err != nil {
				return err
			}
		}
		return nil
	})
	s.batchSeq = nil
	if err == nil {
		s.mu.Lock()
		for _, w := range group {
			w.apply()
		}
		s.mu.Unlock()
	}
	s.cmu.Unlock()
	if err != nil && len(group) > 1 {
		for _, w := range group {
			s.run([]*write{w})
		}
		return
	}
	for _, w := range group {
		w.err = err
		close(w.done)
	}
}

// putTask writes t in tx, under its old insertion sequence or a new one, and returns it as it
// will read back. The caller is the committing writer.
func (s *Store) putTask(tx *bolt.Tx, t task.Task) (taskindex.Entry, error) {
	b := tx.Bucket(bucketTasks)
	st, ok := s.index.Get(t.ID)
	if !ok {
		if seq, ok := s.batchSeq[t.ID]; ok {
			st.Seq = seq // stored earlier in this transaction
		} else {
			seq, err := b.NextSequence()
			if err != nil {
				return taskindex.Entry{}, err
			}
			st.Seq = seq
			if s.batchSeq == nil {
				s.batchSeq = make(map[uuid.UUID]uint64)
			}
			s.batchSeq[t.ID] = seq
		}
	}
	data, err := encodeRecord(st.Seq, &t)
	if err != nil {
		return taskindex.Entry{}, fmt.Errorf("encode task: %w", err)
	}
	var r taskRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return taskindex.Entry{}, fmt.Errorf("decode task: %w", err)
	}
	intern(&r.Task)
	if err := b.Put(t.ID[:], data); err != nil {
		return taskindex.Entry{}, err
	}
	return taskindex.Entry{Seq: st.Seq, Task: r.Task}, nil
}

// encodeRecord writes a task and its insertion sequence as the tasks bucket keeps them: a
// taskRecord, the task in task.AppendCompactJSON's form (no field at its zero value, which
// decoding leaves zero anyway). Records written whole, as json.Marshal writes a taskRecord, read
// the same.
func encodeRecord(seq uint64, t *task.Task) ([]byte, error) {
	b := make([]byte, 0, 640)
	b = append(b, `{"Seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"Task":`...)
	b, err := task.AppendCompactJSON(b, t)
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// intern makes the strings of a freshly decoded task that many tasks, or its own fields, tend to
// repeat share one copy (package unique): the image, the command, the environment, the error and
// its records' types and messages (a Failed record's message is the task's Error). Decoding makes
// a new copy of each for every task, and the store keeps every task: at 10,000 tracked that is
// megabytes of the same few strings. The sharing is among the tasks decoded between two garbage
// collections: unique keeps its canonical copy only while a handle to it lives, and intern keeps
// none (a table of every string ever stored would keep the unique ones too); a copy already
// shared stays shared for as long as the tasks hold it. Measured with 10,000 Failed tasks
// written in a burst: 1,179 bytes of heap per task, 1,490 without. The task is the caller's,
// not yet shared.
//
// The task's exposed ports are shared too, from the set of ports: tasks made from one spec
// expose the same ports, and each decoded set is a map of its own (~190 bytes for one port). The
// stored tasks are immutable, so one map may serve them all. Unlike a string, a map cannot be
// held weakly, so portSets keeps the sets it shares, up to maxPortSets of them; past that a task's
// set is its own.
func intern(t *task.Task) {
	in := func(s *string) {
		if *s != "" {
			*s = unique.Make(*s).Value()
		}
	}
	t.ExposedPorts = portSets.share(t.ExposedPorts)
	in(&t.Image)
	in(&t.Error)
	in(&t.RestartPolicy)
	in(&t.HealthCheck)
	for i := range t.Cmd {
		in(&t.Cmd[i])
	}
	for i := range t.Env {
		in(&t.Env[i])
	}
	for i := range t.Events {
		in(&t.Events[i].Type)
		in(&t.Events[i].Message)
	}
}

// maxPortSets bounds the distinct sets of exposed ports intern shares: a node runs tasks of a
// few dozen specs, and a set past the bound is merely not shared.
const maxPortSets = 256

// portSets holds the sets of exposed ports intern shares, by their ports sorted and joined.
var portSets = portSetTable{sets: make(map[string]task.PortSet)}

type portSetTable struct {
	mu   sync.Mutex
	sets map[string]task.PortSet
}

// share returns the table's map of the ports in p (p itself when the table had none and has room
// for it), or p when the table is full; nil when p is nil. The maps it returns must never be
// changed: they are shared by every task with those ports.
func (x *portSetTable) share(p task.PortSet) task.PortSet {
	if p == nil {
		return nil
	}
	var key string
	if len(p) == 1 {
		for port := range p {
			key = port
		}
	} else {
		key = strings.Join(slices.Sorted(maps.Keys(p)), "\x00")
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if shared, ok := x.sets[key]; ok && maps.Equal(shared, p) { // equal keys, unless a port held a NUL
		return shared
	}
	if _, taken := x.sets[key]; !taken && len(x.sets) < maxPortSets {
		x.sets[key] = p
	}
	return p
}

// shrunk returns orders without its spare room once most of it is spare: a burst of 10,000
// queued starts would otherwise keep an array of 10,000 orders (~2 MB) for as long as the store
// is open.
func shrunk(orders []task.Order) []task.Order {
	if cap(orders) <= 64 || len(orders) >= cap(orders)/4 {
		return orders
	}
	if len(orders) == 0 {
		return nil // not orders[:0]: it would keep the array
	}
	return append(make([]task.Order, 0, 2*len(orders)), orders...)
}

// setTask puts st in memory: the task is freshly decoded, so the index may keep it as it is. The
// caller is the committing writer and holds mu.
func (s *Store) setTask(st taskindex.Entry) { s.index.Put(st.Task, st.Seq) }
