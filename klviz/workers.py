"""Heavy work in a worker process, so the dashboard's server process only draws. No streamlit, no torch here.

    worker = Worker.spawn("klviz.ppo.jobs:run_job", args, on_message=handle)
    worker.send(("stop",))        # a command; the task reads it through its Channel
    worker.join(30)               # the process has ended

Why a process. A training or sampling loop in a thread of the Streamlit server shares its GIL with
every session's reruns: on a 2-core box the live PPO run made no step in 45 s while its page
refreshed (issue 13). A child process has its own interpreter; it runs at a lower OS priority
(`os.nice`) so the server's reruns come first when both want a core.

The child is a fresh interpreter, `python -m klviz.workers FD PARENT_PID` (what multiprocessing's
"spawn" start method does, without its re-import of the parent's __main__: under Streamlit that is the
app script, which the child would run). Nothing of the server's threads, locks or models is
inherited; the task loads its models from their paths. Its environment has OMP_WAIT_POLICY=PASSIVE
(idle OpenMP threads sleep instead of spinning on the core the server needs; libgomp reads it at
start-up: gcc.gnu.org/onlinedocs/libgomp/OMP_005fWAIT_005fPOLICY.html), and it sets torch's thread
count before the task runs. The task and its arguments come pickled over the pipe.

Talking. One duplex Pipe. The parent's reader thread receives every message and hands it to
`on_message` (so the pipe never fills while nobody looks at the page); the child's listener thread
receives commands. When the parent's end closes (the server died, or a dropped Worker's task did not
end within ABANDON_S of being told) the child's listener reads EOF and the child ends; it also checks
os.getppid() once a second.

Reuse. A task that returns sends TASK_END and its process waits for the next task, with torch,
transformers and klviz's engine already imported: the parent keeps at most one such idle process per
priority (IDLE_MAX) and hands it the next spawn, which then starts in milliseconds instead of the
5-10 s of imports. Nothing of the task stays: its objects are freed when it returns (gc.collect), the
next task brings its own environment, sys.path and thread count. A task that was killed or raised, or
whose server went, ends its process as before; a task whose Worker was dropped is told (ABANDON), stops
as if its server had gone, and its process may be reused if it ends within ABANDON_S. An idle process
ends after IDLE_EXIT_S, or when the server ends (EOF), so a quiet server holds no more than one
interpreter per priority.

A spare (off by default: SPARE). Importing torch, transformers and klviz's engine takes a fresh interpreter
5-10 s on two cores, every time a worker starts (each new analysis, each PPO run). With SPARE one process is kept started: it
imports those modules at the worker priority, then waits for its task; the next spawn with the same
priority hands its task to the spare and starts the next spare. It costs one idle interpreter
(~0.4 GB) and ends with the server (its pipe reads EOF). The task brings the parent's current
environment and sys.path with it.
"""

from __future__ import annotations

import importlib
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable

NICE = 2
"""How much lower than the server a worker runs (os.nice increment: 0 same, 19 lowest). Small on purpose:
CFS weighs nice n as 1.25**-n, so at 2 the server gets ~60% of a core both want, while the server mostly
sleeps anyway; at 10 (~10x less weight) a worker on a box shared with other busy processes barely ran."""
PARENT_CHECK_S = 1.0
"""How often the child checks that its parent is still alive."""
ORPHAN_EXIT_S = 10.0
"""Once its parent is gone, the child ends this long after, even if its task never looks at the channel
(a model still loading): nobody can read its results, and it must not hold the cores."""
GONE = "the dashboard went away"
ABANDON = ("abandon",)
"""The parent dropped the task's handle: the task stops (stop_reason GONE); its process may be reused."""
IDLE_EXIT_S = 300.0
"""An idle worker process (its task done, waiting for the next) ends after this long without one."""
IDLE_MAX = 1
"""Idle worker processes kept per priority for the next spawn (REUSE)."""
REUSE = os.environ.get("KLVIZ_REUSE_WORKERS", "1") != "0"
"""Hand a finished task's process the next task (see the module's docstring); KLVIZ_REUSE_WORKERS=0: a
new process for every task."""

TASKS = frozenset({"klviz.analysis_job:run_analysis", "klviz.ppo.jobs:run_job"})
"""The only tasks Worker.spawn starts (the worker imports the module and calls the function): names written
in klviz's code, so nothing typed or uploaded in the page can name what a worker imports."""

TASK_END = "klviz.workers: task ended"
"""The child's last message for a task that returned: its process now waits for the next task (a str: the
child runs as __main__, so a class of this module would not unpickle as the same class here)."""

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])  # so the child imports this klviz, not another copy


class Channel:
    """The child's side of the pipe for one task: send messages, read commands, know when to stop."""

    def __init__(self, conn, send_lock: threading.Lock):
        self._conn, self._send_lock = conn, send_lock
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self.stop_event = threading.Event()
        self.stop_reason: str | None = None

    def send(self, message: Any) -> None:
        """Send one picklable message to the parent (ignored once the parent is gone)."""
        with self._send_lock:
            try:
                self._conn.send(message)
            except (BrokenPipeError, EOFError, OSError):
                self._parent_gone()

    def commands(self) -> list:
        """Commands received since the last call, other than stop (which sets stop_event)."""
        out = []
        while True:
            try:
                out.append(self._commands.get_nowait())
            except queue.Empty:
                return out

    def should_stop(self) -> bool:
        return self.stop_event.is_set()

    def _stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop_event.set()

    def _parent_gone(self) -> None:
        self._stop(GONE)
        timer = threading.Timer(ORPHAN_EXIT_S, os._exit, args=(0,))
        timer.daemon = True
        timer.start()


class _Listener:
    """The child's one reader of the pipe, for its whole life: a task message becomes a new Channel (made
    here, so every later command reaches it in order) queued for the main thread; other messages go to
    the current task's Channel. EOF, or a parent that is no longer ours, ends the current task (GONE) and
    the process (None queued)."""

    def __init__(self, conn, parent_pid: int):
        self._conn, self._parent_pid = conn, parent_pid
        self.send_lock = threading.Lock()
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.current: Channel | None = None
        self.closed = False
        """The parent's end closed or the parent died: no task will come."""
        threading.Thread(target=self._listen, name="klviz-worker-listener", daemon=True).start()

    def _gone(self) -> None:
        self.closed = True
        if self.current is not None:
            self.current._parent_gone()
        self.tasks.put(None)

    def _listen(self) -> None:
        while True:
            try:
                ready = self._conn.poll(PARENT_CHECK_S)
                if ready:
                    message = self._conn.recv()
            except (EOFError, OSError):  # the parent closed its end or died
                return self._gone()
            if os.getppid() != self._parent_pid:
                return self._gone()
            if not ready:
                continue
            if isinstance(message, tuple) and message[:1] == ("task",):
                self.current = Channel(self._conn, self.send_lock)
                self.tasks.put((message[1:], self.current))
            elif self.current is None:
                continue  # a command sent to a task that has already ended
            elif message == ("stop",):
                self.current._stop("stopped on request")
            elif message == ABANDON:  # nobody reads this task's results: stop as if the parent had gone
                self.current._stop(GONE)
            else:
                self.current._commands.put(message)


PRELOAD = tuple(filter(None, os.environ.get(
    "KLVIZ_WORKER_PRELOAD", "torch,transformers,klviz.models,klviz.sampling,klviz.engine.divergence").split(",")))
"""What every task imports: a worker imports it before its first task (a spare while it waits). Set by
the server's owner only (KLVIZ_WORKER_PRELOAD, comma-separated; empty: nothing, as the tests of the
process mechanics use it; a task that imports torch then gets its thread count from OMP_NUM_THREADS)."""


def _trim_heap() -> None:
    """Give the heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing): a task's
    many small allocations (tokenizers, Python objects) otherwise stay in the idle process's RSS."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _child_main(fd: int, parent_pid: int, nice: int) -> None:
    """The worker process's entry point: settle priority, import PRELOAD, then run tasks as they come,
    each as `task(channel, *args)` with the parent's environment, sys.path and thread count, until the
    parent goes, a task does not return normally, or none comes for IDLE_EXIT_S."""
    if nice:
        try:
            os.nice(nice)
        except OSError:  # not permitted here: run at the same priority
            pass
    conn = Connection(fd)
    for module in PRELOAD:
        importlib.import_module(module)
    import gc

    listener = _Listener(conn, parent_pid)
    try:
        while True:
            try:
                got = listener.tasks.get(timeout=IDLE_EXIT_S)
            except queue.Empty:  # idle too long: the parent finds this process gone and starts another
                return
            if got is None:  # the parent went while we waited
                return
            (task, args, num_threads, sys_path, environ), channel = got
            sys.path[:] = sys_path + [p for p in sys.path if p not in sys_path]  # the parent's imports work here
            os.environ.clear()
            os.environ.update(environ)
            torch = sys.modules.get("torch")  # imported by PRELOAD (or by an earlier task)
            if torch is not None:
                torch.set_num_threads(num_threads)
            else:  # a task that imports torch starts it with this many threads
                os.environ["OMP_NUM_THREADS"] = str(num_threads)
            module, _, name = task.partition(":")
            getattr(importlib.import_module(module), name)(channel, *args)
            del args, channel
            listener.current = None
            gc.collect()  # the task's models go now, not when the next task allocates
            _trim_heap()  # and an idle process holds no more memory than it needs
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_initialized():
                torch.cuda.empty_cache()  # and their GPU memory goes back to the device
            if listener.closed or os.getppid() != parent_pid:
                return
            with listener.send_lock:
                try:
                    conn.send(TASK_END)
                except (BrokenPipeError, EOFError, OSError):
                    return
    finally:
        conn.close()


SPARE = os.environ.get("KLVIZ_SPARE_WORKER") == "1"
"""Keep one started worker process ready (see the module's docstring): off unless KLVIZ_SPARE_WORKER=1. On two
cores its imports, started at the first analysis, slowed the page switches that follow by 0.2-1.3 s
(bench/RESULTS.md, "After the house"), more than the 5-10 s it saves the next run."""
_SPARE: dict[int, tuple] = {}
_IDLE: dict[int, list[tuple]] = {}
"""Per priority: (process, conn, since) of processes whose task ended (REUSE), newest last."""
_SPARE_LOCK = threading.Lock()
ABANDON_S = 5.0
"""How long a task whose Worker was dropped may take to stop before its pipe is closed (and it ends)."""
_READ_POLL_S = 1.0
"""The reader thread wakes this often to see whether its task was abandoned."""
_IDLE_MARGIN_S = 30.0
"""An idle process this close to IDLE_EXIT_S is not handed a task (it may end before reading it)."""


def _child_environ() -> dict[str, str]:
    return {**os.environ, "OMP_WAIT_POLICY": "PASSIVE",
            "PYTHONPATH": os.pathsep.join([_PACKAGE_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}


def _start(nice: int) -> tuple:
    """A new worker process (it imports PRELOAD, then waits for its task) and our end of its pipe."""
    parent_sock, child_sock = socket.socketpair()
    try:
        process = subprocess.Popen([sys.executable, "-m", "klviz.workers", str(child_sock.fileno()),
                                    str(os.getpid()), str(nice)], pass_fds=(child_sock.fileno(),),
                                   env=_child_environ(), stdin=subprocess.DEVNULL)
    finally:
        child_sock.close()  # only the child holds it now: its death reads as EOF here
    return process, Connection(parent_sock.detach())


def _ready(nice: int) -> tuple:
    """A process for the next task at this priority: the newest idle one still fresh, else the spare, else
    a new one. Call with _SPARE_LOCK held."""
    idle = _IDLE.get(nice, [])
    while idle:
        process, conn, since = idle.pop()
        if process.poll() is None and time.monotonic() - since < IDLE_EXIT_S - _IDLE_MARGIN_S:
            return process, conn
        conn.close()  # gone, or about to go: it ends on EOF
    spare = _SPARE.pop(nice, None)
    return spare if spare is not None and spare[0].poll() is None else _start(nice)


class _Link:
    """One task's hold on its worker process's pipe (the parent's side)."""

    def __init__(self, process, conn, nice: int):
        self.process, self.conn, self.nice = process, conn, nice
        self.lock = threading.Lock()
        """Held to send, and to end the link."""
        self.ended = False
        """The task is over (or killed): nothing more is sent for it; the pipe is closed or idle in _IDLE."""
        self.abandoned: float | None = None
        """When the task's Worker was dropped (time.monotonic()), if it was."""
        self.done = threading.Event()
        """Set once the task's last message has been handed to on_message (and on_exit has run)."""

    def end(self) -> bool:
        """Mark the task over; False if it already was."""
        with self.lock:
            was, self.ended = self.ended, True
            return not was

    def hand_back(self) -> bool:
        """Keep the process idle for the next task (REUSE, at most IDLE_MAX per priority); False if not kept."""
        if not REUSE or self.process.poll() is not None:
            return False
        with _SPARE_LOCK:
            idle = _IDLE.setdefault(self.nice, [])
            if len(idle) >= IDLE_MAX:
                return False
            idle.append((self.process, self.conn, time.monotonic()))
            return True


def _abandon(link: _Link) -> None:
    """Finalizer of a dropped Worker: nobody will read its task's results. Tell the task (it stops as if its
    parent had gone, GONE, but its process may be reused); the reader thread keeps reading (and passing
    on) its messages until it ends, so a task that was about to end (a finished analysis whose handle
    went with its table) still hands its process back, and hangs up after ABANDON_S (the child reads EOF
    and ends)."""
    with link.lock:
        if link.ended:  # a finished task's pipe is not ours any more
            return
        link.abandoned = time.monotonic()
        try:
            link.conn.send(ABANDON)
        except (BrokenPipeError, EOFError, OSError):
            pass


def _read(link: _Link, on_message: Callable[[Any], None], on_exit: Callable[[], None]) -> None:
    """The parent's reader thread: every message to on_message until the task ends (TASK_END: its process
    is handed back for the next task), the process does (EOF), or its abandoned task outlives ABANDON_S.
    Holds the link, not the Worker: a dropped Worker is collected, and its finalizer abandons the task."""
    finished = False
    try:
        while True:
            if link.abandoned is not None and time.monotonic() - link.abandoned > ABANDON_S:
                break
            if not link.conn.poll(_READ_POLL_S):
                continue
            message = link.conn.recv()
            if type(message) is str and message == TASK_END:
                finished = True
                break
            on_message(message)
    except (EOFError, OSError):
        pass
    finally:
        if not (link.end() and finished and link.hand_back()):
            link.conn.close()
        try:
            on_exit()
        finally:
            link.done.set()


class Worker:
    """A task running in a child process, with its messages delivered to `on_message` by a reader thread."""

    def __init__(self, process, conn, on_message: Callable[[Any], None], on_exit: Callable[[], None],
                 nice: int = NICE):
        self.process = process
        self._link = _Link(process, conn, nice)
        threading.Thread(target=_read, args=(self._link, on_message, on_exit), name="klviz-worker-reader",
                         daemon=True).start()
        weakref.finalize(self, _abandon, self._link)

    @classmethod
    def spawn(cls, task: str, args: tuple, *, on_message: Callable[[Any], None],
              on_exit: Callable[[], None] = lambda: None, nice: int = NICE, num_threads: int = 1) -> "Worker":
        """Start `task` ("module:function", called as function(channel, *args)) in a worker process: an
        idle one of this priority (REUSE), else the spare, else a new one; then start the next spare. Only
        a task in TASKS (ValueError otherwise, before any process starts)."""
        if task not in TASKS:
            raise ValueError(f"{task!r} is not a klviz worker task (klviz.workers.TASKS).")
        with _SPARE_LOCK:
            process, conn = _ready(nice)
            if SPARE and nice not in _SPARE:
                _SPARE[nice] = _start(nice)
        conn.send(("task", task, args, num_threads, list(sys.path), dict(_child_environ())))
        return cls(process, conn, on_message, on_exit, nice)

    def send(self, command: Any) -> bool:
        """Send a command to the task; False if it has already ended."""
        link = self._link
        with link.lock:
            if link.ended:
                return False
            try:
                link.conn.send(command)
                return True
            except (BrokenPipeError, EOFError, OSError):
                return False

    @property
    def alive(self) -> bool:
        """The task is still running."""
        return not self._link.done.is_set() and self.process.poll() is None

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the task to end (its process ended or went idle) and its last messages to be read;
        True if that happened."""
        return self._link.done.wait(timeout)

    def kill(self) -> None:
        """End the task's process now (a last resort: a cooperative stop is a command); nothing once the
        task has ended, since its process may be running another task by then."""
        if self._link.end() and self.process.poll() is None:
            self.process.kill()


if __name__ == "__main__":
    _child_main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
