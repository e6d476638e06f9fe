package taskindex_test

import (
	"testing"

	"github.com/cube-orchestrator/cube/task"
	"github.com/cube-orchestrator/cube/worker/taskindex"
)

func TestFindOrder(t *testing.T) {
	orders := []task.Order{{Seq: 2}, {Seq: 3}, {Seq: 7}, {Seq: 9}}
	for _, tc := range []struct {
		seq  uint64
		at   int
		want bool
	}{{2, 0, true}, {3, 1, true}, {7, 2, true}, {9, 3, true}, {1, 0, false}, {5, 2, false}, {10, 4, false}} {
		at, ok := taskindex.FindOrder(orders, tc.seq)
		if ok != tc.want || (ok && at != tc.at) {
			t.Errorf("FindOrder(%d): got %d, %v; want %d, %v", tc.seq, at, ok, tc.at, tc.want)
		}
	}
	if _, ok := taskindex.FindOrder(nil, 1); ok {
		t.Error("FindOrder in no orders: found")
	}
}
