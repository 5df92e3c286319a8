"""A PPO run in a background thread, read through frozen snapshots. No streamlit here.

    job = PPOJob(sft_model, tokenizer, prompts, PPOConfig(steps=60))
    job.start()                 # returns at once; the trainer is built and run in a daemon thread
    snap = job.snapshot()       # JobSnapshot: state, step, metrics, bands, error (a copy)
    job.save("out/policy")      # waits for the current step to finish, then writes atomically
    job.stop()                  # cooperative: takes effect between steps

Threads. torch.set_num_threads is process-wide in effect: with torch's OpenMP build (the CPU
wheels) it sets the calling thread's pool size and the default that every thread created later
starts with (checked on torch 2.13: a thread that already existed keeps its own setting). So the
job thread lowers it to `num_threads` (default 1: on a 2-core laptop one core stays free for the
UI), the first running job records the process's setting and the last one to finish restores it
(`_TorchThreads`). A UI thread started while a job runs (a Streamlit rerun) scores with
`num_threads` threads: slower, but never queued behind the job's pool. The divergence engine's numba
kernel can reset the count to all cores; PPOTrainer puts it back after each call.

Idle timeout. `snapshot()` is the heartbeat: a job not polled for `idle_timeout_s` stops itself
between steps, so a closed browser tab does not leave training running. JobRegistry caps how many
jobs run at once on one server.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from klviz.engine.columns import BAND_COLUMNS
from klviz.errors import KlvizError
from klviz.ppo.config import PPOConfig
from klviz.ppo.trainer import PPOTrainer

DEFAULT_IDLE_TIMEOUT_S = 120.0
"""Seconds without a snapshot() after which a running job stops itself."""


@dataclass(frozen=True)
class JobSnapshot:
    """A copy of a job's progress at one moment; safe to keep and read from any thread."""

    state: str
    """idle | running | done | stopped | error."""
    step: int
    """Steps finished."""
    steps: int
    """Steps asked for."""
    metrics: list[dict] = field(default_factory=list)
    """One dict of scalar metrics per finished step (PPOTrainer.step's, bands left out)."""
    bands: list[dict] = field(default_factory=list)
    """{"step", and the four length-7 band lists} for each step that recorded bands."""
    error: str | None = None
    """A KlvizError's sentence, or "training failed: <exception>"; None unless state is error."""
    stop_reason: str | None = None
    """Why a stopped job stopped: "stopped on request" or the idle timeout."""


def _copy_band(record: dict) -> dict:
    """A copy of one band record deep enough that the caller cannot change the job's (lists copied)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in record.items()}


class _TorchThreads:
    """Process-wide torch intra-op thread count while any job runs: lowered by the first, restored by the last."""

    _lock = threading.Lock()
    _active = 0
    _saved: int | None = None

    def __init__(self, num_threads: int):
        self.num_threads = num_threads

    def __enter__(self):
        with _TorchThreads._lock:
            if _TorchThreads._active == 0:
                _TorchThreads._saved = torch.get_num_threads()
            _TorchThreads._active += 1
            torch.set_num_threads(self.num_threads)
        return self

    def __exit__(self, *exc):
        with _TorchThreads._lock:
            _TorchThreads._active -= 1
            if _TorchThreads._active == 0 and _TorchThreads._saved is not None:
                torch.set_num_threads(_TorchThreads._saved)


class PPOJob:
    """PPOTrainer.step() in a daemon thread, with stop, snapshots and a thread-safe save."""

    def __init__(self, sft_model, tokenizer, prompts: list[str], cfg: PPOConfig | None = None,
                 policy_init=None, num_threads: int = 1, idle_timeout_s: float | None = DEFAULT_IDLE_TIMEOUT_S):
        if num_threads < 1:
            raise KlvizError(f"num_threads must be >= 1, got {num_threads}.")
        self.cfg = cfg if cfg is not None else PPOConfig()
        self._args = (sft_model, tokenizer, list(prompts), self.cfg, policy_init)
        self.num_threads, self.idle_timeout_s = num_threads, idle_timeout_s
        self._lock = threading.Lock()  # guards the fields below
        self._step_lock = threading.Lock()  # held for a whole step, and while saving
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._trainer: PPOTrainer | None = None
        self._state, self._error, self._stop_reason = "idle", None, None
        self._metrics: list[dict] = []
        self._bands: list[dict] = []
        self._last_poll = time.monotonic()

    def start(self) -> "PPOJob":
        """Start training in a daemon thread; returns at once. A job runs once."""
        with self._lock:
            if self._state != "idle":
                raise KlvizError("This PPO job has already been started: create a new job to train again.")
            self._state, self._last_poll = "running", time.monotonic()
        self._thread = threading.Thread(target=self._run, name="klviz-ppo-job", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the job to stop after the current step (cooperative)."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = "stopped on request"
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True if it has ended (or never started)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def snapshot(self) -> JobSnapshot:
        """A frozen copy of the progress so far; also the heartbeat that keeps the job alive."""
        with self._lock:
            self._last_poll = time.monotonic()
            stop_reason = self._stop_reason if self._state == "stopped" else None
            return JobSnapshot(state=self._state, step=len(self._metrics), steps=self.cfg.steps,
                               metrics=[dict(m) for m in self._metrics],
                               bands=[_copy_band(b) for b in self._bands],
                               error=self._error, stop_reason=stop_reason)

    @property
    def running(self) -> bool:
        with self._lock:
            return self._state == "running"

    @property
    def policy(self):
        """The policy being trained (for inspection; None until the trainer is built). Do not modify."""
        return self._trainer.policy if self._trainer is not None else None

    def save(self, path: str | Path) -> Path:
        """Save the policy as an HF folder; waits for a running step so no update is half-applied."""
        with self._step_lock:
            if self._trainer is None:
                raise KlvizError("The PPO job has no policy yet: start it and wait for the first step.")
            return self._trainer.save(path)

    def _idle_for(self) -> float:
        with self._lock:
            return time.monotonic() - self._last_poll

    def _should_stop(self) -> bool:
        if self._stop.is_set():
            return True
        if self.idle_timeout_s is not None and self._idle_for() > self.idle_timeout_s:
            with self._lock:
                self._stop_reason = f"stopped: not polled for {self.idle_timeout_s:g} s (was the page closed?)"
            return True
        return False

    def _record(self, metrics: dict) -> None:
        band = {k: metrics.pop(k) for k in BAND_COLUMNS if k in metrics}
        with self._lock:
            self._metrics.append(metrics)
            if band:
                self._bands.append({"step": metrics["step"], **band})

    def _finish(self, state: str, error: str | None = None) -> None:
        with self._lock:
            self._state, self._error = state, error

    def _run(self) -> None:
        with _TorchThreads(self.num_threads):
            try:
                with self._step_lock:
                    self._trainer = PPOTrainer(*self._args[:4], policy_init=self._args[4])
                for _ in range(self.cfg.steps):
                    if self._should_stop():
                        return self._finish("stopped")
                    with self._step_lock:
                        metrics = self._trainer.step()
                    self._record(metrics)
                self._finish("done")
            except KlvizError as e:
                self._finish("error", str(e))
            except Exception as e:  # shown to the user as one line; the thread must not die silently
                self._finish("error", f"training failed: {type(e).__name__}: {e}")


class JobRegistry:
    """At most `max_jobs` PPO jobs running at once on this server, looked up by a key (e.g. a session id)."""

    def __init__(self, max_jobs: int = 2):
        self.max_jobs = max_jobs
        self._lock = threading.Lock()
        self._jobs: dict[str, PPOJob] = {}

    def start(self, key: str, *args, **kwargs) -> PPOJob:
        """Create and start a PPOJob(*args, **kwargs) under `key`; KlvizError when the server is full."""
        with self._lock:
            current = self._jobs.get(key)
            if current is not None and current.running:
                raise KlvizError("A PPO job is already running for this session: stop it before starting another.")
            running = sum(job.running for job in self._jobs.values())
            if running >= self.max_jobs:
                raise KlvizError(f"{running} PPO jobs are already running on this server (the limit is "
                                 f"{self.max_jobs}): stop one or wait for it to finish.")
            job = PPOJob(*args, **kwargs)
            self._jobs[key] = job.start()
            return job

    def get(self, key: str) -> PPOJob | None:
        """The latest job started under `key`, running or not."""
        with self._lock:
            return self._jobs.get(key)

    def stop(self, key: str) -> None:
        """Stop the job under `key`, if any."""
        job = self.get(key)
        if job is not None:
            job.stop()

    def running_count(self) -> int:
        with self._lock:
            return sum(job.running for job in self._jobs.values())
