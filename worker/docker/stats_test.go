package docker

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/cube-orchestrator/cube/task"
	"github.com/docker/docker/api/types/container"
)

// statsV1 is an answer of Engine 20.10 on cgroup v1 (stream=false), cut to what statsOf reads.
const statsV1 = `{
  "read": "2026-11-28T13:03:25.958701296Z",
  "pids_stats": {"current": 6},
  "blkio_stats": {"io_service_bytes_recursive": [
    {"major": 8, "minor": 0, "op": "Read", "value": 4096},
    {"major": 8, "minor": 0, "op": "Write", "value": 8192},
    {"major": 8, "minor": 0, "op": "Sync", "value": 100},
    {"major": 8, "minor": 0, "op": "Total", "value": 12288},
    {"major": 8, "minor": 16, "op": "Read", "value": 1}
  ]},
  "cpu_stats": {"cpu_usage": {"total_usage": 1500000000, "percpu_usage": [1000000000, 500000000]},
                "system_cpu_usage": 6000000000, "online_cpus": 2},
  "precpu_stats": {"cpu_usage": {"total_usage": 1000000000}, "system_cpu_usage": 4000000000},
  "memory_stats": {"usage": 6467584, "stats": {"cache": 5070848, "inactive_file": 5070848, "rss": 909312},
                   "limit": 67108864},
  "networks": {"eth0": {"rx_bytes": 632, "tx_bytes": 10}, "eth1": {"rx_bytes": 8, "tx_bytes": 2}}
}`

// statsV2 is the same on cgroup v2: no "cache", no per-CPU usage, lowercase block I/O ops.
const statsV2 = `{
  "read": "2026-11-28T13:03:25Z",
  "pids_stats": {"current": 2},
  "blkio_stats": {"io_service_bytes_recursive": [{"op": "read", "value": 10}, {"op": "write", "value": 20}]},
  "cpu_stats": {"cpu_usage": {"total_usage": 3000}, "system_cpu_usage": 11000, "online_cpus": 4},
  "precpu_stats": {"cpu_usage": {"total_usage": 2000}, "system_cpu_usage": 1000},
  "memory_stats": {"usage": 1000, "stats": {"inactive_file": 400, "anon": 600}, "limit": 2000}
}`

func TestStatsOf(t *testing.T) {
	for _, tt := range []struct {
		name string
		json string
		want task.ContainerStats
	}{
		{"cgroup v1", statsV1, task.ContainerStats{
			Time: time.Date(2026, 11, 28, 13, 3, 25, 958701296, time.UTC),
			// 0.5 s of CPU over 2 s of the machine's 2 CPUs: half a core.
			CPUPercent: 50, MemoryUsage: 6467584 - 5070848, MemoryLimit: 64 << 20,
			NetworkRx: 640, NetworkTx: 12, BlockRead: 4097, BlockWrite: 8192, PIDs: 6,
		}},
		{"cgroup v2", statsV2, task.ContainerStats{
			Time:       time.Date(2026, 11, 28, 13, 3, 25, 0, time.UTC),
			CPUPercent: 40, MemoryUsage: 600, MemoryLimit: 2000, BlockRead: 10, BlockWrite: 20, PIDs: 2,
		}},
		{"one sample only", `{"cpu_stats": {"cpu_usage": {"total_usage": 5}, "system_cpu_usage": 9, "online_cpus": 1},
			"memory_stats": {"usage": 10, "stats": {"cache": 20}}}`, task.ContainerStats{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var s container.StatsResponse
			if err := json.Unmarshal([]byte(tt.json), &s); err != nil {
				t.Fatal(err)
			}
			if got := statsOf(s); got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
