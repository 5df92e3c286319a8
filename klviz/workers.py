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


def _child_main(fd: int, parent_pid: int) -> None:
    """The worker process's entry point: read the task, settle priority and threads, run `task(channel, *args)`."""
    conn = Connection(fd)
    task, args, nice, num_threads, sys_path = conn.recv()
    sys.path[:] = sys_path + [p for p in sys.path if p not in sys_path]  # the parent's imports work here
    if nice:
        try:
            os.nice(nice)
        except OSError:  # not permitted here: run at the same priority
            pass
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
        """Start `task` ("module:function", called as function(channel, *args)) in a new process."""
        parent_sock, child_sock = socket.socketpair()
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE",
               "PYTHONPATH": os.pathsep.join([_PACKAGE_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}
        try:
            process = subprocess.Popen([sys.executable, "-m", "klviz.workers", str(child_sock.fileno()),
                                        str(os.getpid())], pass_fds=(child_sock.fileno(),), env=env,
                                       stdin=subprocess.DEVNULL)
        finally:
            child_sock.close()  # only the child holds it now: its death reads as EOF here
        conn = Connection(parent_sock.detach())
        conn.send((task, args, nice, num_threads, list(sys.path)))
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
    _child_main(int(sys.argv[1]), int(sys.argv[2]))
