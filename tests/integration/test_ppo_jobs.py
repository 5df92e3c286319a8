"""PPO jobs in worker processes (klviz.ppo.jobs over klviz.workers) on a tiny random GPT-2 saved here.

Each job spawns a fresh interpreter that imports torch and transformers (a few seconds on a busy
2-core box), so the tests start as few jobs as their assertions need; all but the first run at the
test's own priority (nice=0), so a machine busy with other work does not starve them.
"""

import gc
import os
import time

import pytest
from transformers import AutoModelForCausalLM

from klviz.errors import KlvizError
from klviz.ppo.config import PPOConfig
from klviz.ppo.jobs import JobRegistry, ModelSpec, PPOJob
from klviz.workers import NICE
from tests.helpers.tiny import make_tiny_model, make_tokenizer, save_model

PROMPTS = ["the food was", "the room and", "staff", "the food was very not"]
# Long enough that a fast CI box cannot finish the run while the test saves and reloads a snapshot.
STEPS_NEVER_REACHED = 1_000_000
SPAWN_TIMEOUT_S = 300.0  # a worker imports torch + transformers and loads the model before its first step


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    tok = make_tokenizer()
    return str(save_model(make_tiny_model("gpt2", len(tok), seed=0), tmp_path_factory.mktemp("sft"), tok))


def small_cfg(**overrides):
    base = dict(reward="keyword:good", steps=3, batch_size=8, max_new_tokens=6, ppo_epochs=2, minibatches=2,
                device="cpu", bands_every=1, lr=1e-2)
    return PPOConfig(**{**base, **overrides})


def _wait(job, predicate, timeout=SPAWN_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = job.snapshot()
        if predicate(snap):
            return snap
        time.sleep(0.05)
    raise AssertionError(f"job did not get there: {job.snapshot()}")


def _exited(pid: int, timeout: float, or_idle: bool = False) -> bool:
    """True once process `pid` (a child of this one) has ended, reaping it if nobody else has; with `or_idle`,
    also once klviz.workers keeps it for the next task (REUSE): its task has ended, nothing more runs."""
    import klviz.workers

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if or_idle and any(p.pid == pid for idle in klviz.workers._IDLE.values() for p, _, _ in idle):
            return True
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # already reaped (by multiprocessing): it has ended
            return True
        if done == pid:
            return True
        time.sleep(0.1)
    return False


def test_job_start_snapshot_save_stop(sft_dir, tmp_path):
    job = PPOJob(ModelSpec(sft_dir), PROMPTS, small_cfg(steps=STEPS_NEVER_REACHED), num_threads=1)
    assert job.snapshot().state == "idle" and job.pid is None
    job.start()
    assert job.pid != os.getpid()  # trains in another process...
    snap = _wait(job, lambda s: s.step >= 2)
    assert os.getpriority(os.PRIO_PROCESS, job.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICE)  # ...lower
    assert snap.state == "running" and snap.steps == STEPS_NEVER_REACHED and snap.bands and snap.bands[0]["step"] == 1
    assert "mass_gained_by_sft_bin" not in snap.metrics[0]  # bands live in .bands only
    snap.metrics.append({"tampered": True})
    assert {"tampered": True} not in job.snapshot().metrics  # a snapshot is a copy
    saved = job.save(tmp_path / "mid")  # written by the worker, between steps
    assert AutoModelForCausalLM.from_pretrained(str(saved), local_files_only=True) is not None
    job.stop()
    assert job.join(timeout=60)
    assert _exited(job.pid, 10, or_idle=True)  # stopping ends the task: its process ends, or waits for the next
    final = job.snapshot()
    assert final.state == "stopped" and final.stop_reason == "stopped on request" and final.step < STEPS_NEVER_REACHED
    after = job.save(tmp_path / "after")  # the process has gone: its final policy is copied
    assert AutoModelForCausalLM.from_pretrained(str(after), local_files_only=True) is not None
    with pytest.raises(KlvizError, match="already been started"):
        job.start()


def test_job_reports_errors_and_ends_when_its_handle_is_dropped(sft_dir):
    bad = PPOJob(sft_dir, PROMPTS, small_cfg(reward="nope"), nice=0).start()
    assert bad.join(timeout=SPAWN_TIMEOUT_S)
    snap = bad.snapshot()
    assert snap.state == "error" and snap.error.startswith("Unknown reward 'nope'")
    with pytest.raises(KlvizError, match="no policy yet"):
        bad.save("unused")
    dropped = PPOJob(sft_dir, PROMPTS, small_cfg(steps=STEPS_NEVER_REACHED), nice=0).start()
    _wait(dropped, lambda s: s.step >= 1)  # training, and nobody needs to poll it for that
    pid = dropped.pid
    del dropped
    gc.collect()
    assert _exited(pid, 30, or_idle=True)  # told it was dropped, the task stopped: its process ended or waits


def test_registry_limits_concurrent_jobs(sft_dir):
    registry = JobRegistry(max_jobs=1)
    first = registry.start("a", sft_dir, PROMPTS, small_cfg(steps=STEPS_NEVER_REACHED), nice=0)
    try:
        with pytest.raises(KlvizError, match="limit is 1"):
            registry.start("b", sft_dir, PROMPTS, small_cfg())
        with pytest.raises(KlvizError, match="already running for this session"):
            registry.start("a", sft_dir, PROMPTS, small_cfg())
        assert registry.running_count() == 1 and registry.get("a") is first
    finally:
        registry.stop("a")
        assert first.join(timeout=SPAWN_TIMEOUT_S)
    second = registry.start("b", sft_dir, PROMPTS, small_cfg(steps=1), nice=0)
    assert second.join(timeout=SPAWN_TIMEOUT_S) and second.snapshot().state == "done"
