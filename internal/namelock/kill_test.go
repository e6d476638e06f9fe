package namelock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// With NAMELOCK_HOLD=dir set, the test binary is a process that takes the lock on "web" for
// ENGINE in dir, says so on stdout, and waits to be killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("NAMELOCK_HOLD"); dir != "" {
		if _, err := Acquire(dir, "ENGINE", "web", time.Now()); err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
		fmt.Println("held")
		select {}
	}
	os.Exit(m.Run())
}

// A lock held by a process that is killed with SIGKILL is free at once: the kernel drops the
// flock with the process's files, and nothing stale is left to block the next worker.
func TestKilledHolderReleases(t *testing.T) {
	dir := t.TempDir()
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "NAMELOCK_HOLD="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "held\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: holder said %q, %v; want held", round, line, err)
		}
		_, err = Acquire(dir, "ENGINE", "web", time.Now())
		var held *HeldError
		if !errors.As(err, &held) || held.Holder.PID != cmd.Process.Pid {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: Acquire while the holder lives: got %v, want held by pid %d", round, err, cmd.Process.Pid)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		l, err := Acquire(dir, "ENGINE", "web", time.Now())
		if err != nil {
			t.Fatalf("round %d: Acquire after kill -9 of the holder: %v", round, err)
		}
		l.Release()
	}
}
