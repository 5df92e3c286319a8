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
receives commands. When the parent's end closes (the Worker was dropped, or the server died) the
child's listener reads EOF and the child ends; it also checks os.getppid() once a second.

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

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])  # so the child imports this klviz, not another copy


class Channel:
    """The child's side of the pipe: send messages, read commands, know when to stop."""

    def __init__(self, conn, parent_pid: int):
        self._conn, self._parent_pid = conn, parent_pid
        self._send_lock = threading.Lock()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self.stop_event = threading.Event()
        self.stop_reason: str | None = None
        threading.Thread(target=self._listen, name="klviz-worker-listener", daemon=True).start()

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

    def _listen(self) -> None:
        while True:
            try:
                ready = self._conn.poll(PARENT_CHECK_S)
                if ready:
                    command = self._conn.recv()
            except (EOFError, OSError):  # the parent closed its end or died
                return self._parent_gone()
            if os.getppid() != self._parent_pid:
                return self._parent_gone()
            if not ready:
                continue
            if command == ("stop",):
                self._stop("stopped on request")
            else:
                self._commands.put(command)


PRELOAD = ("torch", "transformers", "klviz.models", "klviz.sampling", "klviz.engine.divergence")
"""What every task imports: a spare imports it while it waits."""


def _child_main(fd: int, parent_pid: int, nice: int) -> None:
    """The worker process's entry point: settle priority, import PRELOAD, wait for the task, run
    `task(channel, *args)` with the parent's environment, sys.path and thread count."""
    if nice:
        try:
            os.nice(nice)
        except OSError:  # not permitted here: run at the same priority
            pass
    conn = Connection(fd)
    for module in PRELOAD:
        importlib.import_module(module)
    try:
        task, args, num_threads, sys_path, environ = conn.recv()
    except (EOFError, OSError):  # a spare whose server ended before giving it a task
        return
    sys.path[:] = sys_path + [p for p in sys.path if p not in sys_path]  # the parent's imports work here
    os.environ.clear()
    os.environ.update(environ)
    import torch

    torch.set_num_threads(num_threads)
    module, _, name = task.partition(":")
    channel = Channel(conn, parent_pid)
    try:
        getattr(importlib.import_module(module), name)(channel, *args)
    finally:
        conn.close()


def _hang_up(conn) -> None:
    """Finalizer of a dropped Worker: shut the socket down, so the child reads EOF and ends, and our reader
    thread (blocked in recv on this very socket, which a plain close would not wake) returns."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as s:
            s.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):  # already closed
        pass


SPARE = os.environ.get("KLVIZ_SPARE_WORKER") == "1"
"""Keep one started worker process ready (see the module's docstring): off unless KLVIZ_SPARE_WORKER=1. On two
cores its imports, started at the first analysis, slowed the page switches that follow by 0.2-1.3 s
(bench/RESULTS.md, "After the house"), more than the 5-10 s it saves the next run."""
_SPARE: dict[int, tuple] = {}
_SPARE_LOCK = threading.Lock()


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


class Worker:
    """A task running in a child process, with its messages delivered to `on_message` by a reader thread."""

    def __init__(self, process, conn, on_message: Callable[[Any], None], on_exit: Callable[[], None]):
        self.process, self._conn = process, conn
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, args=(conn, on_message, on_exit),
                                        name="klviz-worker-reader", daemon=True)
        self._reader.start()
        weakref.finalize(self, _hang_up, conn)

    @classmethod
    def spawn(cls, task: str, args: tuple, *, on_message: Callable[[Any], None],
              on_exit: Callable[[], None] = lambda: None, nice: int = NICE, num_threads: int = 1) -> "Worker":
        """Start `task` ("module:function", called as function(channel, *args)) in a worker process: the
        spare when it has this priority, else a new one; then start the next spare."""
        with _SPARE_LOCK:
            spare = _SPARE.pop(nice, None)
            process, conn = spare if spare is not None and spare[0].poll() is None else _start(nice)
            if SPARE:
                _SPARE[nice] = _start(nice)
        conn.send((task, args, num_threads, list(sys.path), dict(_child_environ())))
        return cls(process, conn, on_message, on_exit)

    @staticmethod
    def _read(conn, on_message, on_exit) -> None:
        # Holds the connection, not the Worker: a dropped Worker is collected, and its finalizer closes conn.
        try:
            while True:
                on_message(conn.recv())
        except (EOFError, OSError):
            pass
        finally:
            conn.close()
            on_exit()

    def send(self, command: Any) -> bool:
        """Send a command to the child; False if it has already gone."""
        with self._send_lock:
            try:
                self._conn.send(command)
                return True
            except (BrokenPipeError, EOFError, OSError):
                return False

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the process to end and its last messages to be read; True if both happened."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        self._reader.join(timeout)
        return not self._reader.is_alive()

    def kill(self) -> None:
        """End the process now (a last resort: a cooperative stop is a command)."""
        if self.process.poll() is None:
            self.process.kill()


if __name__ == "__main__":
    _child_main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
