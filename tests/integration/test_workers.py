"""klviz.workers: a worker whose parent dies ends even when its task never looks at its channel."""

import os
import subprocess
import sys
import textwrap
import time

import klviz.workers


def deaf_task(channel, seconds: float) -> None:
    """A task that never checks channel.should_stop() (as a model load does), with a short orphan grace."""
    klviz.workers.ORPHAN_EXIT_S = 0.5
    channel.send(os.getpid())
    time.sleep(seconds)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = open(f"/proc/{pid}/stat").read().split(") ")[-1].split()[0] if os.path.exists(f"/proc/{pid}/stat") else "X"
    return stat not in ("Z", "X")


def test_an_orphaned_worker_ends_though_its_task_never_checks_the_channel():
    parent = textwrap.dedent("""
        import os, queue, sys
        from klviz.workers import Worker
        got = queue.SimpleQueue()
        w = Worker.spawn("tests.integration.test_workers:deaf_task", (600.0,), on_message=got.put)
        print(got.get(timeout=120), flush=True)
        os._exit(0)  # the dashboard dies without a word to its worker
    """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, cwd=root)
    child = int(proc.stdout.readline())
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    orphaned = _alive(child)
    if orphaned:
        os.kill(child, 9)
    assert not orphaned, "the orphaned worker was still running 30 s after its parent died"


def report_task(channel, name: str) -> None:
    channel.send((os.getpid(), os.environ.get(name)))


def test_the_next_task_runs_in_the_started_spare_with_the_parents_current_environment(monkeypatch):
    import queue

    monkeypatch.setattr(klviz.workers, "SPARE", True)  # off by default (KLVIZ_SPARE_WORKER=1)

    def run(value: str):
        monkeypatch.setenv("KLVIZ_TEST_MARK", value)
        got = queue.SimpleQueue()
        w = klviz.workers.Worker.spawn("tests.integration.test_workers:report_task", ("KLVIZ_TEST_MARK",),
                                       on_message=got.put)
        message = got.get(timeout=120)
        assert w.join(60)
        return message

    run("first")
    spare = klviz.workers._SPARE[klviz.workers.NICE][0]
    assert spare.poll() is None, "no spare was started"
    pid, mark = run("second")  # set after the spare started: the task brings the parent's environment
    assert (pid, mark) == (spare.pid, "second")
