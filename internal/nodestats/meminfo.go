package nodestats

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// MemInfo is the content of /proc/meminfo. Values are in kB, as the kernel
// reports them, except the HugePages_* fields, which are page counts.
//
// Fields and JSON tags are those of goprocinfo's linux.MemInfo. A field whose
// Go name differs from the /proc/meminfo key carries the key in a field tag,
// as in goprocinfo. Keys the running kernel does not report stay zero.
type MemInfo struct {
	MemTotal          uint64 `json:"mem_total"`
	MemFree           uint64 `json:"mem_free"`
	MemAvailable      uint64 `json:"mem_available"`
	Buffers           uint64 `json:"buffers"`
	Cached            uint64 `json:"cached"`
	SwapCached        uint64 `json:"swap_cached"`
	Active            uint64 `json:"active"`
	Inactive          uint64 `json:"inactive"`
	ActiveAnon        uint64 `json:"active_anon" field:"Active(anon)"`
	InactiveAnon      uint64 `json:"inactive_anon" field:"Inactive(anon)"`
	ActiveFile        uint64 `json:"active_file" field:"Active(file)"`
	InactiveFile      uint64 `json:"inactive_file" field:"Inactive(file)"`
	Unevictable       uint64 `json:"unevictable"`
	Mlocked           uint64 `json:"mlocked"`
	SwapTotal         uint64 `json:"swap_total"`
	SwapFree          uint64 `json:"swap_free"`
	Dirty             uint64 `json:"dirty"`
	Writeback         uint64 `json:"write_back"`
	AnonPages         uint64 `json:"anon_pages"`
	Mapped            uint64 `json:"mapped"`
	Shmem             uint64 `json:"shmem"`
	Slab              uint64 `json:"slab"`
	SReclaimable      uint64 `json:"s_reclaimable"`
	SUnreclaim        uint64 `json:"s_unclaim"`
	KernelStack       uint64 `json:"kernel_stack"`
	PageTables        uint64 `json:"page_tables"`
	NFS_Unstable      uint64 `json:"nfs_unstable"`
	Bounce            uint64 `json:"bounce"`
	WritebackTmp      uint64 `json:"writeback_tmp"`
	CommitLimit       uint64 `json:"commit_limit"`
	Committed_AS      uint64 `json:"committed_as"`
	VmallocTotal      uint64 `json:"vmalloc_total"`
	VmallocUsed       uint64 `json:"vmalloc_used"`
	VmallocChunk      uint64 `json:"vmalloc_chunk"`
	HardwareCorrupted uint64 `json:"hardware_corrupted"`
	AnonHugePages     uint64 `json:"anon_huge_pages"`
	HugePages_Total   uint64 `json:"huge_pages_total"`
	HugePages_Free    uint64 `json:"huge_pages_free"`
	HugePages_Rsvd    uint64 `json:"huge_pages_rsvd"`
	HugePages_Surp    uint64 `json:"huge_pages_surp"`
	Hugepagesize      uint64 `json:"hugepagesize"`
	DirectMap4k       uint64 `json:"direct_map_4k"`
	DirectMap2M       uint64 `json:"direct_map_2M"`
	DirectMap1G       uint64 `json:"direct_map_1G"`
}

// byKey maps each /proc/meminfo key to the field of m that holds it.
func (m *MemInfo) byKey() map[string]*uint64 {
	return map[string]*uint64{
		"MemTotal":          &m.MemTotal,
		"MemFree":           &m.MemFree,
		"MemAvailable":      &m.MemAvailable,
		"Buffers":           &m.Buffers,
		"Cached":            &m.Cached,
		"SwapCached":        &m.SwapCached,
		"Active":            &m.Active,
		"Inactive":          &m.Inactive,
		"Active(anon)":      &m.ActiveAnon,
		"Inactive(anon)":    &m.InactiveAnon,
		"Active(file)":      &m.ActiveFile,
		"Inactive(file)":    &m.InactiveFile,
		"Unevictable":       &m.Unevictable,
		"Mlocked":           &m.Mlocked,
		"SwapTotal":         &m.SwapTotal,
		"SwapFree":          &m.SwapFree,
		"Dirty":             &m.Dirty,
		"Writeback":         &m.Writeback,
		"AnonPages":         &m.AnonPages,
		"Mapped":            &m.Mapped,
		"Shmem":             &m.Shmem,
		"Slab":              &m.Slab,
		"SReclaimable":      &m.SReclaimable,
		"SUnreclaim":        &m.SUnreclaim,
		"KernelStack":       &m.KernelStack,
		"PageTables":        &m.PageTables,
		"NFS_Unstable":      &m.NFS_Unstable,
		"Bounce":            &m.Bounce,
		"WritebackTmp":      &m.WritebackTmp,
		"CommitLimit":       &m.CommitLimit,
		"Committed_AS":      &m.Committed_AS,
		"VmallocTotal":      &m.VmallocTotal,
		"VmallocUsed":       &m.VmallocUsed,
		"VmallocChunk":      &m.VmallocChunk,
		"HardwareCorrupted": &m.HardwareCorrupted,
		"AnonHugePages":     &m.AnonHugePages,
		"HugePages_Total":   &m.HugePages_Total,
		"HugePages_Free":    &m.HugePages_Free,
		"HugePages_Rsvd":    &m.HugePages_Rsvd,
		"HugePages_Surp":    &m.HugePages_Surp,
		"Hugepagesize":      &m.Hugepagesize,
		"DirectMap4k":       &m.DirectMap4k,
		"DirectMap2M":       &m.DirectMap2M,
		"DirectMap1G":       &m.DirectMap1G,
	}
}

// readMemInfo reads and parses the meminfo file at path.
func readMemInfo(path string) (*MemInfo, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read meminfo: %w", err)
	}
	m, err := parseMemInfo(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return m, nil
}

// parseMemInfo parses the content of /proc/meminfo ("Key:   value [kB]"
// lines). Keys MemInfo has no field for are skipped, and keys missing from
// data leave their field zero; only MemTotal is required. A malformed value of
// a known key is an error.
func parseMemInfo(data []byte) (*MemInfo, error) {
	var m MemInfo
	fields := m.byKey()
	sawTotal := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		dst, known := fields[key]
		if !known {
			continue
		}
		val := strings.Fields(rest)
		if len(val) == 0 {
			return nil, fmt.Errorf("line %d: %s has no value", n, key)
		}
		v, err := strconv.ParseUint(val[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", n, key, err)
		}
		*dst = v
		if key == "MemTotal" {
			sawTotal = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !sawTotal {
		return nil, errors.New("no MemTotal line")
	}
	return &m, nil
}
