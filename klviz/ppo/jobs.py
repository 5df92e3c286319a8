"""A PPO run in a worker process, read through frozen snapshots. No streamlit here.

    job = PPOJob(ModelSpec("runs/sft"), prompts, PPOConfig(steps=60))
    job.start()                 # returns at once; the worker loads the SFT model from its path and trains
    snap = job.snapshot()       # JobSnapshot: state, step, metrics, bands, error (a copy)
    job.save("out/policy")      # the worker writes the policy between steps (or, once it has ended,
                                # the final policy it left behind is copied), atomically
    job.stop()                  # cooperative: takes effect between steps; the process then exits

Why a process (klviz.workers): in a thread of the Streamlit server the run shared the server's GIL
and made no progress while its page refreshed. The worker runs at a lower priority than the
server, on `num_threads` torch threads; JobRegistry shares the machine's cores among the running
jobs (one run alone gets every core, two runs on two cores one each: `share_threads`) and tells a
running worker its new count, applied between steps. It is sent paths, never models: it loads the SFT model (and the policy to start from)
itself, so nothing large is pickled and the server's cached models are never touched.

A run keeps going while nobody looks at it. It ends when stopped, when finished, when its PPOJob is
dropped (the pipe closes: see klviz.workers) or when the server process dies. The dashboard stops
the runs of a browser session when the session ends. JobRegistry caps how many run at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from klviz.engine.columns import BAND_COLUMNS
from klviz.errors import KlvizError
from klviz.io import atomic_folder
from klviz.ppo.config import PPOConfig
from klviz.ppo.rewards import check_reward
from klviz.workers import GONE, NICE, Worker

SAVE_TIMEOUT_S = 600.0
"""Longest wait for the worker to write a policy asked for while it trains (it saves between steps)."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a worker loads a model from: it is sent this, never a pickled model."""

    source: str
    """The checkpoint: an HF folder, a .zip of one, a LoRA adapter folder or a .gguf file."""
    base: str | None = None
    """An adapter's base checkpoint (None: not an adapter, or the SFT checkpoint for a policy adapter)."""
    dtype: str = "auto"
    """Weights' dtype as klviz.models.load_model takes it (auto: float32 on CPU)."""


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
    """Why a stopped job stopped: "stopped on request", or that the dashboard went away."""
    threads: int | None = None
    """The torch threads the worker trains on (None until it has started)."""


def _copy_band(record: dict) -> dict:
    """A copy of one band record deep enough that the caller cannot change the job's (lists copied)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in record.items()}


class _Progress:
    """What the worker has reported, written by the reader thread and read by snapshot()."""

    def __init__(self, on_end: Callable[[], None] = lambda: None):
        self.cond = threading.Condition()  # guards everything below; notified on each message
        self.on_end = on_end  # called (outside the lock) once the job has ended
        self.state, self.error, self.stop_reason = "idle", None, None
        self.metrics: list[dict] = []
        self.bands: list[dict] = []
        self.saved: dict[str, tuple[str | None, str | None]] = {}  # save id -> (path, error)
        self.threads: int | None = None
        self.exited = False

    def on_message(self, message: tuple) -> None:
        kind, *rest = message
        with self.cond:
            if kind == "step":
                metrics = dict(rest[0])
                band = {k: metrics.pop(k) for k in BAND_COLUMNS if k in metrics}
                self.metrics.append(metrics)
                if band:
                    self.bands.append({"step": metrics["step"], **band})
            elif kind == "threads":
                self.threads = rest[0]
            elif kind == "saved":
                save_id, path, error = rest
                self.saved[save_id] = (path, error)
            elif kind == "end":
                self.state, self.error, reason = rest
                self.stop_reason = self.stop_reason or reason
            self.cond.notify_all()
        if kind == "end":
            self.on_end()

    def on_exit(self) -> None:
        with self.cond:
            self.exited = True
            ended = self.state == "running"
            if ended:  # killed, or crashed before it could say why
                self.state, self.error = "error", "training failed: the training process ended unexpectedly."
            self.cond.notify_all()
        if ended:
            self.on_end()


def _copy_folder(src: Path, path: Path) -> Path:
    """Copy the folder `src` onto `path` atomically (klviz.io.atomic_folder)."""
    with atomic_folder(path) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    return path


class PPOJob:
    """PPOTrainer.step() in a worker process, with stop, snapshots and save."""

    def __init__(self, sft: ModelSpec | str | Path, prompts: list[str], cfg: PPOConfig | None = None,
                 policy_init: ModelSpec | str | Path | None = None, num_threads: int = 1, nice: int = NICE,
                 allow_code: bool = True, on_end: Callable[[], None] = lambda: None):
        if num_threads < 1:
            raise KlvizError(f"num_threads must be >= 1, got {num_threads}.")
        self.cfg = cfg if cfg is not None else PPOConfig()
        as_spec = lambda m: m if isinstance(m, ModelSpec) or m is None else ModelSpec(str(m))  # noqa: E731
        self.sft, self.policy_init = as_spec(sft), as_spec(policy_init)
        self.prompts = [str(p) for p in prompts]
        self.num_threads, self.nice, self.allow_code = num_threads, nice, allow_code
        check_reward(self.cfg.reward, allow_code)  # refused here (code, or a malformed name), and again in the worker
        self._progress = _Progress(on_end)
        self._worker: Worker | None = None
        self._final = Path(tempfile.mkdtemp(prefix="klviz-ppo-job-")) / "policy"  # the worker's last policy
        weakref.finalize(self, shutil.rmtree, self._final.parent, True)

    def start(self) -> "PPOJob":
        """Start the worker process; returns at once. A job runs once."""
        p = self._progress
        with p.cond:
            if p.state != "idle":
                raise KlvizError("This PPO job has already been started: create a new job to train again.")
            p.state = "running"
        self._worker = Worker.spawn("klviz.ppo.jobs:run_job",
                                    (self.sft, self.prompts, self.cfg, self.policy_init, str(self._final),
                                     self.allow_code),
                                    on_message=p.on_message, on_exit=p.on_exit,
                                    nice=self.nice, num_threads=self.num_threads)
        return self

    @property
    def pid(self) -> int | None:
        """The worker process's id (None before start)."""
        return self._worker.process.pid if self._worker is not None else None

    def stop(self) -> None:
        """Ask the worker to stop after the current step (cooperative); it then exits."""
        with self._progress.cond:
            if self._progress.stop_reason is None:
                self._progress.stop_reason = "stopped on request"
        if self._worker is not None:
            self._worker.send(("stop",))

    def set_threads(self, n: int) -> None:
        """Have the running worker train on `n` torch threads from its next step on."""
        self.num_threads = max(1, int(n))
        if self._worker is not None and self.running:
            self._worker.send(("threads", self.num_threads))

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to end and its last report to arrive; True if it has (or never started)."""
        return self._worker is None or self._worker.join(timeout)

    def snapshot(self, history: bool = True) -> JobSnapshot:
        """A frozen copy of the progress so far; with history=False, without the metrics and bands
        (empty lists: a poll that shows the step and state copies nothing per step)."""
        p = self._progress
        with p.cond:
            return JobSnapshot(state=p.state, step=len(p.metrics), steps=self.cfg.steps,
                               metrics=[dict(m) for m in p.metrics] if history else [],
                               bands=[_copy_band(b) for b in p.bands] if history else [],
                               error=p.error, stop_reason=p.stop_reason if p.state == "stopped" else None,
                               threads=p.threads)

    @property
    def running(self) -> bool:
        with self._progress.cond:
            return self._progress.state == "running"

    def save(self, path: str | Path) -> Path:
        """Save the policy as an HF folder: by the worker between steps, or from the policy it left at the end."""
        path, p = Path(path), self._progress
        save_id = uuid.uuid4().hex
        if self._worker is not None and self.running and self._worker.send(("save", save_id, str(path))):
            with p.cond:
                p.cond.wait_for(lambda: save_id in p.saved or p.exited, timeout=SAVE_TIMEOUT_S)
                reply = p.saved.pop(save_id, None)
            if reply is not None:
                if reply[1] is not None:
                    raise KlvizError(reply[1])
                return Path(reply[0])
            if not p.exited:
                raise KlvizError("The PPO run did not save its policy in time: try again after its next step.")
        if not self._final.is_dir():
            raise KlvizError("The PPO job has no policy yet: start it and wait for the first step.")
        return _copy_folder(self._final, path)


# --- the worker's side --------------------------------------------------------------------------

def _serve_commands(channel, trainer) -> None:
    """Between steps: saves asked for, and the thread count JobRegistry shares out."""
    import torch

    for command in channel.commands():
        if command[0] == "threads":
            torch.set_num_threads(command[1])
            channel.send(("threads", torch.get_num_threads()))
        elif command[0] == "save":
            _, save_id, path = command
            try:
                channel.send(("saved", save_id, str(trainer.save(path)), None))
            except KlvizError as e:
                channel.send(("saved", save_id, None, str(e)))
            except OSError as e:
                channel.send(("saved", save_id, None, f"Could not save the policy to {Path(path).name}: "
                                                      f"{e.strerror or e}."))


def _load(spec: ModelSpec, device: str, role: str, base: str | None = None):
    from klviz.models import load_model

    return load_model(spec.source, device=device, dtype=spec.dtype, base=spec.base or base, role=role)


def run_job(channel, sft: ModelSpec, prompts: list[str], cfg: PPOConfig, policy_init: ModelSpec | None,
            final: str, allow_code: bool) -> None:
    """The worker process's task (klviz.workers): load, train, report each step, leave the final policy."""
    import torch

    from klviz.ppo.trainer import PPOTrainer

    try:
        check_reward(cfg.reward, allow_code)  # before PPOTrainer's get_reward could import anything
        channel.send(("threads", torch.get_num_threads()))  # klviz.workers set it from the job's num_threads
        ref = _load(sft, cfg.device, "sft")
        init = _load(policy_init, cfg.device, "policy", base=sft.source) if policy_init is not None else None
        trainer = PPOTrainer(ref.model, ref.tokenizer, prompts, cfg, policy_init=init.model if init else None)
        del init
        for _ in range(cfg.steps):
            _serve_commands(channel, trainer)
            if channel.should_stop():
                break
            channel.send(("step", trainer.step()))
        if channel.stop_reason == GONE:
            return
        trainer.save(final)  # so the policy can still be saved once this process has gone
        _serve_commands(channel, trainer)
        stopped = channel.should_stop()
        channel.send(("end", "stopped" if stopped else "done", None, channel.stop_reason if stopped else None))
    except KlvizError as e:
        channel.send(("end", "error", str(e), None))
    except Exception as e:  # shown to the user as one line; the worker must not die silently
        channel.send(("end", "error", f"training failed: {type(e).__name__}: {e}", None))


def share_threads(cores: int, running: int) -> int:
    """Torch threads for each of `running` jobs on `cores` cores: all of them for one job, never below one.

    One thread per job left a core idle while a single run trained: the sample pair's run made 0.57
    steps/s on its page against 0.98 for `klviz ppo` on both cores (bench/RESULTS.md, bench/live.py).
    The server still comes first: workers run at a lower priority, and OpenMP threads sleep when idle.
    """
    return max(1, cores // max(1, running))


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, e.g. a container's limit, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class JobRegistry:
    """At most `max_jobs` PPO jobs running at once on this server, looked up by a key (e.g. a session id);
    the cores are shared among the running ones (`share_threads`), again whenever one starts or ends."""

    def __init__(self, max_jobs: int = 2, cores: int | None = None):
        self.max_jobs, self.cores = max_jobs, cores or cpu_cores()
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
            kwargs = {"num_threads": share_threads(self.cores, running + 1), **kwargs, "on_end": self._share}
            job = PPOJob(*args, **kwargs)
            self._jobs[key] = job.start()
        self._share()
        return job

    def _share(self) -> None:
        """Give every running job its share of the cores (a job's start or end changed how many run)."""
        with self._lock:
            running = [job for job in self._jobs.values() if job.running]
        for job in running:
            n = share_threads(self.cores, len(running))
            if job.num_threads != n:
                job.set_threads(n)

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
