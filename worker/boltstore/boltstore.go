// Package boltstore keeps a worker's state in a bbolt database file (go.etcd.io/bbolt), so that a
// worker started with --data-dir finds it again after a restart or a crash: every task, every order
// the worker accepted and has not yet applied, and the event IDs it accepted.
//
// A *Store satisfies worker.Store. It keeps a copy of everything in memory, loaded at Open, and
// reads only that copy, so reads never touch the disk and cannot fail. Every write goes to the
// file first, in a bbolt transaction that has committed (and, unless Options.NoSync, been synced
// to disk) before the write returns; only then does the in-memory copy change. A write that fails
// leaves the store as it was. Writes made at the same time share a transaction (a group commit):
// one fsync for all of them, while a write made alone waits for nothing but its own.
//
// The file is locked while a Store has it open: a second worker on the same file fails at Open
// with an error that matches ErrLocked, instead of waiting.
//
// The data file holds registry credentials (Task.RegistryAuth) in the clear, since the worker needs
// them to pull a task's image again when it restarts the task. Open creates the file with mode 0600
// and OpenDir creates its directory with mode 0700; an existing file or directory keeps its mode.
//
// The layout, schema version 1, with every value JSON unless said otherwise:
//
//	meta    "version" → "1" (text)
//	tasks   task ID (16 bytes) → {"Seq": insertion sequence, "Task": task.Task}, the task
//	        without its zero fields (task.AppendCompactJSON; records written whole read the same)
//	orders  Seq (8 bytes, big-endian) → task.Order
//	seen    event ID (16 bytes) → task ID (16 bytes, raw)
//
// The insertion sequence of a task comes from the tasks bucket's NextSequence when the task is
// first stored, and orders its tasks in List; an order's Seq comes from the orders bucket's
// NextSequence, so both keep growing across reopens.
package boltstore

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/taskindex"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// FileName is the name of the database file OpenDir opens in its directory.
const FileName = "cube.db"

// DefaultLockTimeout is how long Open waits for another process to release the file's lock when
// Options.LockTimeout is zero.
const DefaultLockTimeout = 100 * time.Millisecond

// appendFill is the FillPercent of a bucket whose keys are put in ascending order (orders): its
// pages are filled to 90 % before they split, where bbolt's default, 50 %, suits keys in any order.
const appendFill = 0.9

// schemaVersion is the layout this package reads and writes.
const schemaVersion = "1"

var (
	bucketMeta   = []byte("meta")
	bucketTasks  = []byte("tasks")
	bucketOrders = []byte("orders")
	bucketSeen   = []byte("seen")
	keyVersion   = []byte("version")
)

// ErrLocked is matched (with errors.Is) by the error Open and OpenDir return when another process,
// or another Store in this one, has the database file open.
var ErrLocked = errors.New("database is in use by another cube worker")

// Options tunes Open. The zero value is what a worker wants.
type Options struct {
	// LockTimeout is how long Open waits for the database file's lock before it fails with
	// ErrLocked. Zero means DefaultLockTimeout; a negative value tries once.
	LockTimeout time.Duration
	// NoSync skips the fsync after each transaction. Writes get much faster and a crash of the
	// machine (not only of the worker) can lose or corrupt them: for benchmarks and tests only.
	NoSync bool
}

// Store is a worker store kept in a bbolt database file, with a copy of everything in memory.
// It is safe for concurrent use. Get it from Open or OpenDir.
type Store struct {
	db   *bolt.DB
	path string

	// Writes are committed in groups (see commit): qmu guards the queue of writes waiting and
	// whether a writer is committing them. Only the committing writer, holding cmu, changes
	// the fields below mu, and it takes mu to do so; so it may read them without mu.
	qmu       sync.Mutex
	queue     []*write
	committer bool
	cmu       sync.Mutex
	batchSeq  map[uuid.UUID]uint64 // insertion sequences of new tasks in the transaction under way
	mu        sync.RWMutex

	index  taskindex.Index // the tasks with their insertion sequences, in that order, and the events seen
	orders []task.Order
}

// taskRecord is a task as kept in the tasks bucket: a taskindex.Entry, into which a record
// decodes in place. Its JSON is {"Seq":…,"Task":{…}}.
type taskRecord taskindex.Entry

// lockedError says which database another worker holds. It matches ErrLocked and bbolt's
// ErrTimeout.
type lockedError struct {
	dir  string // the data dir when opened with OpenDir; empty otherwise
	path string
}

func (e *lockedError) Error() string {
	if e.dir != "" {
		return fmt.Sprintf("data dir %s is in use by another cube worker (database %s is locked)", e.dir, e.path)
	}
	return fmt.Sprintf("database %s is in use by another cube worker (the file is locked)", e.path)
}

func (e *lockedError) Is(target error) bool { return target == ErrLocked }

func (e *lockedError) Unwrap() error { return bolterrors.ErrTimeout }

// OpenDir creates dir (mode 0700) when it does not exist and opens the Store in dir/cube.db, as
// Open does. It fails when dir cannot be created, and as Open fails; when another worker has the
// file, the error matches ErrLocked and names dir.
func OpenDir(dir string, opts Options) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	return open(filepath.Join(dir, FileName), dir, opts)
}

// Open opens the Store in the database file at path, creating the file (mode 0600) when it does
// not exist, and loads everything in it into memory. Its directory must exist.
//
// When another process (or another Store in this one) has the file open, Open waits up to
// opts.LockTimeout and then fails with an error that matches ErrLocked. A file that cannot be
// opened, is not a bbolt database, is corrupt, or holds records Open cannot decode gives an error
// that names path.
func Open(path string, opts Options) (*Store, error) {
	return open(path, "", opts)
}

func open(path, dir string, opts Options) (*Store, error) {
	// bbolt reads the file through a memory map rounded up to a power of two: a page it reads
	// past the end of a truncated file faults (SIGBUS), which kills the process unless this
	// goroutine turns faults into panics, which openDB and load recover as errors.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	timeout := opts.LockTimeout
	if timeout == 0 {
		timeout = DefaultLockTimeout
	}
	db, err := openDB(path, &bolt.Options{Timeout: timeout, NoSync: opts.NoSync})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, &lockedError{dir: dir, path: path}
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
		errors.Is(err, bolterrors.ErrVersionMismatch):
		return nil, fmt.Errorf("open database %s: the file is corrupt or not a bbolt database: %w", path, err)
	case err != nil:
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	s := &Store{db: db, path: path}
	if err := s.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return s, nil
}

// openDB opens the bbolt file, turning a panic (bbolt panics on some corrupt pages) into an error.
// After a panic it unlocks and closes the file, so that a later Open can tell what is wrong again
// instead of finding the file locked. (Closing alone is not enough: bbolt's memory map of the file
// keeps it open, and its lock held, in the kernel. The map itself leaks, once per such Open.)
func openDB(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	var f *os.File
	opts.OpenFile = func(name string, flag int, mode os.FileMode) (*os.File, error) {
		var err error
		f, err = os.OpenFile(name, flag, mode)
		return f, err
	}
	defer func() {
		if r := recover(); r != nil {
			if f != nil {
				unlock(f)
				f.Close()
			}
			db, err = nil, fmt.Errorf("the file is corrupt: %v", r)
		}
	}()
	return bolt.Open(path, 0o600, opts)
}

// load creates the buckets of a new database, checks the schema version of an old one, and reads
// everything into memory.
func (s *Store) load() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the file is corrupt: %v", r)
		}
	}()
	err = s.db.Update(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			if v := meta.Get(keyVersion); string(v) != schemaVersion {
				return fmt.Errorf("schema version %q, want %q: was it written by another version of cube?", v, schemaVersion)
			}
		} else {
			var other []string
			tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				other = append(other, string(name))
				return nil
			})
			if len(other) > 0 {
				return fmt.Errorf("not a cube database: it has buckets %q and no %q", other, bucketMeta)
			}
			meta, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			if err := meta.Put(keyVersion, []byte(schemaVersion)); err != nil {
				return err
			}
		}
		for _, name := range [][]byte{bucketTasks, bucketOrders, bucketSeen} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %q: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}

	return s.db.View(func(tx *bolt.Tx) error {
		// Each task is decoded into an entry of its own, which the index then keeps: one copy
		// of each task, not one in a growing slice and another in the index.
		var entries []*taskindex.Entry
		err := tx.Bucket(bucketTasks).ForEach(func(k, v []byte) error {
			id, err := uuid.FromBytes(k)
			if err != nil {
				return fmt.Errorf("task key %x: %w", k, err)
			}
			e := new(taskindex.Entry)
			if err := json.Unmarshal(v, (*taskRecord)(e)); err != nil {
				return fmt.Errorf("task %s: %w", id, err)
			}
			e.Task.ID = id
			intern(&e.Task)
			entries = append(entries, e)
			return nil
		})
		if err != nil {
			return err
		}
		slices.SortFunc(entries, func(a, b *taskindex.Entry) int {
			if c := cmp.Compare(a.Seq, b.Seq); c != 0 {
				return c
			}
			return bytes.Compare(a.Task.ID[:], b.Task.ID[:])
		})
		s.index.Grow(len(entries), tx.Bucket(bucketSeen).Stats().KeyN)
		for _, e := range entries {
			s.index.PutEntry(e)
		}

		err = tx.Bucket(bucketOrders).ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("order key %x: want 8 bytes", k)
			}
			seq := binary.BigEndian.Uint64(k)
			var o task.Order
			if err := json.Unmarshal(v, &o); err != nil {
				return fmt.Errorf("order %d: %w", seq, err)
			}
			o.Seq = seq
			s.orders = append(s.orders, o) // keys sort as big-endian numbers: already in Seq order
			return nil
		})
		if err != nil {
			return err
		}

		return tx.Bucket(bucketSeen).ForEach(func(k, v []byte) error {
			ev, err := uuid.FromBytes(k)
			if err != nil {
				return fmt.Errorf("seen key %x: %w", k, err)
			}
			id, err := uuid.FromBytes(v)
			if err != nil {
				return fmt.Errorf("seen event %s: task %x: %w", ev, v, err)
			}
			s.index.See(ev, id)
			return nil
		})
	})
}

// seqKey is the key of the order with the given Seq.
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// cloneOrder returns a deep copy of o: it shares no pointer, map or slice with o.
func cloneOrder(o task.Order) task.Order {
	if o.Event != nil {
		ev := *o.Event
		ev.Task = ev.Task.Clone()
		o.Event = &ev
	}
	return o
}
