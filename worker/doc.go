// Package worker runs tasks on one machine. It owns the queue of accepted task events, the loop
// that applies them through the task state machine and a [Runtime], the store of every task, and
// the watch over the runtime's container events that tells the worker, at once, when a container
// exits or disappears.
//
// # One owner per task
//
// What one task is doing lives in its runner (runner.go), as in Nomad's task runner: the
// operations waiting for it (its backlog), the goroutine that applies them (its lane), its
// restart timer, its health probe, and whether a stop or removal of it is accepted. The
// handlers of the operations are the runner's methods: start, launch, restartDue, restartNow and
// adopt (start.go), check and ended (exits.go), stop (stop.go), health (health.go),
// pauseChanged (pause.go) and remove (gc.go). The Worker keeps only what the tasks share: the
// store, the runtime, the intake queue, the change stream, the names, the start slots, what it
// knows of an outage (outage.go) and of containers that are no task's (ownership.go), and the
// runners themselves.
//
// A runner's goroutine exists only while the runner has operations to apply: it is started when
// an operation reaches an idle runner and returns when the backlog runs dry or waits (for the
// runtime, or for a start slot), so that a worker tracking 10,000 tasks, most of them ended, or
// with thousands of starts queued, runs no goroutine for them. A goroutine per task for as long
// as it is tracked would cost its stack for every ended task, and a Running task
// waits on nothing the runner could wait for: its container's end comes as a Docker event, its
// probe has a goroutine of its own, its back-off is a timer. The runner value itself lives while
// its task has work or state beyond its stored record (an operation, a timer, a probe, a stop or
// removal under way, a start slot); one whose task the store does not have, or whose task it saw
// end, is dropped when its backlog runs dry.
//
// # Goroutines, and who owns them
//
// Run owns every goroutine the worker starts, and waits for all of them (Worker.wg) before it
// returns; each ends when Run's context is done:
//
//   - the loop, Run itself: it moves each operation of the intake queue to its task's runner
//     (dispatch) and starts the runner's goroutine when it has none;
//   - one goroutine per runner with work (runner.run), which applies its backlog in order;
//   - one probe per task with a health check (runProbe), started and stopped by its runner;
//   - the watch over the runtime's events (reconcile.go), the reconcile ticker, the ping ticker
//     (outage.go), and retention (gc.go).
//
// Restart timers are time.AfterFunc values owned by their runners; all they do is enqueue.
//
// Worker.mu guards the intake, the runners map, the start slots and each runner's shared fields
// (backlog, the flags, the timer, its place among those waiting for a slot). It is never held across a runtime call. It is held across the store's
// Accept in Submit, Stop, Remove and retention (on disk, a commit), so that a request is checked
// and journaled in one step; it is not held across the writes of a task's runner. A task's
// probe state (its cancel function, its container's address) belongs to the runner's
// goroutine alone. Each write of a task is a read-modify-write under its stripe of writeMu
// (Worker.modify); a writer may take mu inside it, never the other way round.
//
// # How an event reaches a task's runner
//
// An API event: [Worker.Submit], [Worker.Stop] and [Worker.Remove] (submit.go, gc.go) check the
// request against the store under mu, store it as an order (Store.Accept, before the client
// hears yes), push an operation onto the intake queue and wake the loop; the loop routes it to
// the task's runner, whose goroutine applies it and marks the order done.
//
// A Docker event: the watch (reconcile.go) receives each container event, labelled with its
// task's ID, and turns it into an operation (a die, oom or destroy into a check, a health status
// into health, a pause into pauseChanged); it enqueues it, and from the intake on it takes the
// same path. Reconciles, timers and probes enqueue the same way, so that every change to a task
// is made by its runner's goroutine, one at a time, in the order the operations arrived, and
// always through [task.ValidTransition].
//
// When the runtime does not answer, an operation that needs it parks its runner: the operation
// and everything behind it wait, in order, in the runner's backlog, and the runner is woken when
// the runtime answers again (markUp). Start-up recovery (recover.go) routes its operations
// directly, before the loop runs.
//
// A start waits for a start slot (Config.Concurrency of them) the same way, without a goroutine
// (slots.go): a launch that finds none free goes back to the front of its runner's backlog, the
// runner joins the queue of those waiting for a slot, first come first, and its goroutine
// returns. A slot given back is handed to the first of them, which is woken holding it, and its
// launch runs again from the top. A stop or removal routed to a runner waiting for a slot takes
// it off the queue and wakes it: its launch finds the stop and starts nothing. So a burst of
// 10,000 submits costs a backlog entry per queued start, not a goroutine's stack.
//
// # What the store promises
//
// The [Store] hands out copies, so that no reader races a writer. A durable store (boltstore)
// writes through to disk before a write returns: an order is stored before Submit, Stop or
// Remove answer, so that what a client was told survives a crash, and is replayed by New; a task
// made Scheduled with its start's event is stored before its container is created, so that a
// start replayed after a crash finds the container it made (its name comes from the event). A
// task's record is deleted only once every container of it is gone. Every store write's error is
// returned to the operation's caller, or logged where the operation must go on.
//
// # The clock
//
// Every time the worker records or compares comes from Config.Now. One thing does not: the
// change stream's numbers start from the wall clock (seqBase in changes.go), because they must
// come after every number a previous run of the worker handed out, whatever clock a test or a
// caller injects.
package worker
