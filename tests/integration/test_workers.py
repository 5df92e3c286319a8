"""klviz.workers: a worker whose parent dies ends even when its task never looks at its channel."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

import klviz.workers


TEST_TASKS = [f"tests.integration.test_workers:{name}"
              for name in ("deaf_task", "report_task", "failing_task", "waiting_task")]


@pytest.fixture(autouse=True)
def bare_workers(monkeypatch):
    """Worker processes that import nothing before their task (KLVIZ_WORKER_PRELOAD=""): these tasks need
    no torch, and each new process then starts in a fraction of a second instead of 5-10 s. Their idle
    processes are kept apart from the other tests' (which preload torch) and end with the test."""
    monkeypatch.setenv("KLVIZ_WORKER_PRELOAD", "")
    monkeypatch.setattr(klviz.workers, "TASKS", klviz.workers.TASKS | set(TEST_TASKS))
    idle, spare = {}, {}
    monkeypatch.setattr(klviz.workers, "_IDLE", idle)
    monkeypatch.setattr(klviz.workers, "_SPARE", spare)
    yield
    for _, conn in [entry[:2] for entries in idle.values() for entry in entries] + list(spare.values()):
        conn.close()  # the child reads EOF and ends


def deaf_task(channel, seconds: float) -> None:
    """A task that never checks channel.should_stop() (as a model load does), with a short orphan grace."""
    for module in (klviz.workers, sys.modules["__main__"]):  # the child runs klviz.workers as __main__
        module.ORPHAN_EXIT_S = 0.5
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
        import klviz.workers
        from klviz.workers import Worker
        got = queue.SimpleQueue()
        klviz.workers.TASKS = klviz.workers.TASKS | {"tests.integration.test_workers:deaf_task"}
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
    monkeypatch.setattr(klviz.workers, "REUSE", False)  # else the first task's process runs the second

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


def failing_task(channel) -> None:
    channel.send(os.getpid())
    raise RuntimeError("a task that does not return")


def waiting_task(channel) -> None:
    """Reports its pid, then each command it receives, until stopped."""
    channel.send(os.getpid())
    while not channel.should_stop():
        for command in channel.commands():
            channel.send(command)
        time.sleep(0.02)
    channel.send(("stopped", channel.stop_reason))


def _spawn(task: str, *args):
    import queue

    got = queue.SimpleQueue()
    ended = []
    w = klviz.workers.Worker.spawn(f"tests.integration.test_workers:{task}", args, on_message=got.put,
                                   on_exit=lambda: ended.append(True))
    return w, got, ended


@pytest.fixture
def fresh_pool(monkeypatch):
    """REUSE on and no spare (an idle process left by an earlier test may run the first task)."""
    monkeypatch.setattr(klviz.workers, "REUSE", True)
    monkeypatch.setattr(klviz.workers, "SPARE", False)


def test_a_finished_tasks_process_runs_the_next_task_with_the_callers_environment(monkeypatch, fresh_pool):
    monkeypatch.setenv("KLVIZ_TEST_MARK", "first")
    w, got, ended = _spawn("report_task", "KLVIZ_TEST_MARK")
    first_pid, mark = got.get(timeout=120)
    assert mark == "first" and w.join(60) and ended == [True] and not w.alive
    assert w.process.poll() is None, "the finished task's process ended instead of waiting for the next"
    assert not w.send(("late",)), "a finished task still took commands"
    monkeypatch.setenv("KLVIZ_TEST_MARK", "second")
    w2, got2, _ = _spawn("waiting_task")
    assert got2.get(timeout=60) == first_pid
    assert w2.send(("hello",)) and got2.get(timeout=30) == ("hello",)  # commands reach the new task, in order
    w2.send(("stop",))
    assert got2.get(timeout=30) == ("stopped", "stopped on request") and w2.join(30)
    w.kill()  # the first task's handle can no longer end the process, which now belongs to the pool
    w3, got3, _ = _spawn("report_task", "KLVIZ_TEST_MARK")
    assert got3.get(timeout=60) == (first_pid, "second") and w3.join(30)


def test_a_task_that_does_not_return_takes_its_process_with_it_and_a_stale_idle_one_is_not_used(monkeypatch,
                                                                                                 fresh_pool):
    """One sequence, so that each new process (5-10 s of imports) is started once: a killed task's process
    is not reused, nor a failed one's; a returned one's is, but not when it has idled too long."""
    w, got, ended = _spawn("waiting_task")
    killed = got.get(timeout=120)
    w.kill()
    assert w.join(60) and ended == [True] and w.process.wait(30) is not None
    w, got, ended = _spawn("failing_task")
    failed = got.get(timeout=120)
    assert failed != killed and w.join(60) and ended == [True] and w.process.wait(30) is not None
    w, got, _ = _spawn("report_task", "PATH")
    returned = got.get(timeout=120)[0]
    assert returned != failed and w.join(60) and w.process.poll() is None  # idle, for the next task
    monkeypatch.setattr(klviz.workers, "_IDLE_MARGIN_S", klviz.workers.IDLE_EXIT_S)  # every idle one is stale
    w2, got2, _ = _spawn("report_task", "PATH")
    assert got2.get(timeout=120)[0] != returned and w2.join(60)
    assert w.process.wait(30) is not None, "the stale idle process did not end when its pipe closed"


def test_a_dropped_handle_stops_its_task_and_the_process_is_reused_or_ends(monkeypatch, fresh_pool):
    """A Worker dropped mid-task (the app drops a finished job with its table): its task is told (ABANDON:
    it stops as if its server had gone) and the process runs the next task; a task that does not stop
    within ABANDON_S loses its pipe and its process ends."""
    import gc

    w, got, _ = _spawn("waiting_task")
    pid = got.get(timeout=60)
    del w
    gc.collect()
    assert got.get(timeout=30) == ("stopped", klviz.workers.GONE)  # the reader still passes its messages on
    deadline = time.monotonic() + 30
    while not any(p.pid == pid for idle in klviz.workers._IDLE.values() for p, _, _ in idle):
        assert time.monotonic() < deadline, "the abandoned task's process was not kept for the next task"
        time.sleep(0.05)
    w2, got2, _ = _spawn("report_task", "PATH")
    assert got2.get(timeout=30)[0] == pid and w2.join(30)

    monkeypatch.setattr(klviz.workers, "ABANDON_S", 0.5)
    w3, got3, _ = _spawn("deaf_task", 600.0)
    deaf = got3.get(timeout=60)
    process = w3.process
    del w3
    gc.collect()
    assert process.wait(30) is not None, "a task deaf to ABANDON kept its process past ABANDON_S"
    assert deaf == process.pid


@pytest.mark.parametrize("task", ["os:system", "pty:spawn", "tests.integration.test_workers:report_task "])
def test_only_klvizs_own_tasks_start_a_worker(task, monkeypatch):
    monkeypatch.setattr(klviz.workers, "TASKS", frozenset({"klviz.analysis_job:run_analysis"}))
    started = []
    monkeypatch.setattr(klviz.workers, "_start", lambda nice: started.append(nice))
    with pytest.raises(ValueError, match="is not a klviz worker task"):
        klviz.workers.Worker.spawn(task, ("echo hi",), on_message=print)
    assert started == [] and klviz.workers._IDLE == {}
