"""Sampling and scoring a pair (the dashboard's token table) in a worker process. No streamlit here.

    job = AnalysisJob(PairSpec("runs/policy", "runs/sft"), prompts, SamplingSettings()).start()
    snap = job.snapshot()   # AnalysisSnapshot: state, fraction done, what it is doing, table or error
    AnalysisJob(pair, [], settings, responses="rollouts.jsonl")   # score those responses instead

With `responses` the worker samples nothing: it reads the file with klviz.rollouts (before loading the
pair, so a malformed file fails at once) and scores it as `klviz score --input` does.

The worker (klviz.workers: its own interpreter, lower priority) loads the pair from its paths and
runs `sampling.settings_table`, the same computation the dashboard ran in its own process
before, so its table is the one the CLI and the shipped sample view give. Progress comes from the
tqdm bars of sampling and scoring: the worker reads them from its stderr (tqdm writes
"desc:  40%|####  | 4/10") and sends (fraction, stage) at most every PROGRESS_EVERY_S.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from klviz.errors import KlvizError
from klviz.workers import NICE, Worker

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from klviz.settings import SamplingSettings

PROGRESS_EVERY_S = 0.25
"""Least time between two progress messages from the worker."""
LOAD_SHARE = 0.1
"""The progress bar's share for loading the pair; sampling and scoring share the rest by their tqdm bars."""
_TQDM = re.compile(r"(?P<desc>[a-z][\w ()]*): *(?P<pct>\d+)%")


@dataclass(frozen=True)
class PairSpec:
    """Where the worker loads the pair from (paths, never pickled models), and how."""

    policy: str
    """The policy checkpoint (folder, .zip, adapter or .gguf)."""
    sft: str
    """The SFT checkpoint."""
    policy_base: str | None = None
    """A policy adapter's base (None: the SFT checkpoint)."""
    device: str = "auto"
    """Where to run (klviz.device)."""
    dtype: str = "auto"
    """Weights' dtype (auto: float32 on CPU)."""


@dataclass(frozen=True)
class AnalysisSnapshot:
    """A job's progress at one moment."""

    state: str
    """idle | running | done | error."""
    fraction: float
    """Share of the work done, 0..1 (for st.progress)."""
    stage: str
    """What the worker is doing: "loading the pair", "sampling (policy)", "scoring", ..."""
    table: "pd.DataFrame | None" = None
    """The token table once done (shared: do not modify)."""
    error: str | None = None
    """One sentence when state is error."""
    oom: bool = False
    """The error was running out of memory (the page says what to lower)."""
    seconds_per_token: float | None = None
    """The SFT model's forward seconds per token, timed by the worker once it has loaded the pair
    (klviz.ppo.estimate: Live PPO's run-time estimate); None until then."""


class _Progress:
    def __init__(self, on_probe: "Callable[[float], None] | None" = None):
        self.on_probe = on_probe
        self.lock = threading.Lock()
        self.state, self.fraction, self.stage = "idle", 0.0, "waiting"
        self.table, self.error, self.oom, self.seconds_per_token = None, None, False, None

    def on_message(self, message: tuple) -> None:
        kind, *rest = message
        with self.lock:
            if kind == "progress":
                self.fraction, self.stage = rest
            elif kind == "done":
                self.state, self.table, self.fraction, self.stage = "done", rest[0], 1.0, "done"
            elif kind == "error":
                self.state, self.error = "error", rest[0]
            elif kind == "oom":
                self.state, self.error, self.oom = "error", "Out of memory.", True
            elif kind == "probe":
                self.seconds_per_token = rest[0]
        if kind == "probe" and self.on_probe is not None:
            self.on_probe(rest[0])

    def on_exit(self) -> None:
        with self.lock:
            if self.state == "running":
                self.state, self.error = "error", "Sampling failed: the worker process ended unexpectedly."


class AnalysisJob:
    """`sampling.settings_table` for a pair given by paths (or, with `responses`, that file scored), in a worker
    process."""

    def __init__(self, pair: PairSpec, prompts: list, settings: "SamplingSettings", nice: int = NICE,
                 num_threads: int = 1, responses: str | None = None,
                 on_probe: "Callable[[float], None] | None" = None):
        """`on_probe(seconds_per_token)`: called from the reader thread when the worker has timed the SFT
        model's forward, before sampling (AnalysisSnapshot.seconds_per_token)."""
        self.pair, self.prompts, self.settings, self.responses = pair, list(prompts), settings, responses
        self.nice, self.num_threads = nice, num_threads
        self._progress = _Progress(on_probe)
        self._worker: Worker | None = None

    def start(self) -> "AnalysisJob":
        with self._progress.lock:
            if self._progress.state != "idle":
                raise KlvizError("This analysis has already been started.")
            self._progress.state = "running"
        args = (self.pair, self.prompts, self.settings, self.responses)
        self._worker = Worker.spawn("klviz.analysis_job:run_analysis", args,
                                    on_message=self._progress.on_message, on_exit=self._progress.on_exit,
                                    nice=self.nice, num_threads=self.num_threads)
        return self

    @property
    def pid(self) -> int | None:
        return self._worker.process.pid if self._worker is not None else None

    def snapshot(self) -> AnalysisSnapshot:
        p = self._progress
        with p.lock:
            return AnalysisSnapshot(p.state, p.fraction, p.stage, p.table, p.error, p.oom, p.seconds_per_token)

    def join(self, timeout: float | None = None) -> bool:
        return self._worker is None or self._worker.join(timeout)

    def cancel(self) -> None:
        """End the worker now (nothing it computed is kept)."""
        if self._worker is not None:
            self._worker.kill()


# --- the worker's side --------------------------------------------------------------------------

class _TqdmFeed:
    """A stand-in stderr that turns tqdm's progress lines into ("progress", fraction, stage) messages."""

    def __init__(self, channel, stages: int):
        self.channel, self.stages = channel, stages
        self.done_stages, self.last_desc, self.last_sent = 0, None, 0.0

    def write(self, text: str) -> int:
        for m in _TQDM.finditer(text):
            desc, pct = m["desc"].strip(), int(m["pct"])
            if self.last_desc is not None and desc != self.last_desc:
                self.done_stages += 1
            self.last_desc = desc
            now = time.monotonic()
            if now - self.last_sent >= PROGRESS_EVERY_S or pct == 100:
                share = (min(self.done_stages, self.stages - 1) + pct / 100) / self.stages
                self.channel.send(("progress", LOAD_SHARE + (1 - LOAD_SHARE) * share, desc))
                self.last_sent = now
        return len(text)

    def flush(self) -> None:
        pass


def _scored_file(loaded, rollouts: list, settings: "SamplingSettings"):
    """The token table of logged responses: klviz.rollouts' ScoreInputs (extra fields -> columns) scored by
    the engine, as `klviz score --input` does, with the dashboard's top-k."""
    from klviz.engine.divergence import score
    from klviz.rollouts import score_inputs
    from klviz.settings import TOP_K

    inputs = score_inputs(rollouts, loaded.tokenizer)
    return score(loaded.policy, loaded.sft, loaded.tokenizer, inputs, top_k=TOP_K,
                 batch_size=settings.config().batch_size, progress=True)


def run_analysis(channel, pair: PairSpec, prompts: list, settings: "SamplingSettings",
                 responses: str | None = None) -> None:
    """The worker's task: load the pair, sample and score (or score the `responses` file) with progress,
    send the table; first, the SFT model's forward is timed (`_send_probe`)."""
    from klviz.models import load_pair
    from klviz.rollouts import read_rollouts
    from klviz.sampling import settings_table

    try:
        rollouts = read_rollouts(responses)[1] if responses is not None else None  # malformed: fail before loading
        channel.send(("progress", 0.0, "loading the pair"))
        loaded = load_pair(pair.policy, pair.sft, device=pair.device, dtype=pair.dtype, policy_base=pair.policy_base)
        _send_probe(channel, loaded.sft)
        # sampling per source, then scoring; a responses file is only scored
        stages = 1 if rollouts is not None else (2 if settings.sample_from == "both" else 1) + 1
        channel.send(("progress", LOAD_SHARE, "scoring" if rollouts is not None else "sampling"))
        sys.stderr = _TqdmFeed(channel, stages)
        try:
            table = (_scored_file(loaded, rollouts, settings) if rollouts is not None
                     else settings_table(loaded, prompts, settings, progress=True))
        finally:
            sys.stderr = sys.__stderr__
        channel.send(("done", table))
    except KlvizError as e:
        channel.send(("error", str(e)))
    except Exception as e:  # one line for the page; the worker must not die silently
        import torch

        if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
            channel.send(("oom",))  # the page's out-of-memory sentence (klviz.app.feedback)
        else:
            what = "Scoring the responses" if responses is not None else "Sampling"
            channel.send(("error", f"{what} failed: {type(e).__name__}: {e}"))


def _send_probe(channel, model) -> None:
    """("probe", seconds per token) of `model`'s forward on the threads a lone PPO run would train on
    (klviz.ppo.estimate), so the server process never times a large model itself. Here, before sampling,
    while the server loads its own copy of the pair: timed after the table it ran into the page switches
    that follow the first chart on the 2-core box (Token inspector 1.31 s against 0.94 s without it;
    bench/real_pair_dashboard.py), where it adds two short passes (~0.5 s on SmolLM2) to the first chart.
    Optional: a failure sends nothing, and the page says the estimate is not available."""
    from klviz.ppo.estimate import probe_seconds_per_token
    from klviz.ppo.jobs import cpu_cores

    if channel.should_stop():
        return
    try:
        seconds = probe_seconds_per_token(model, threads=cpu_cores(), timed=1)
    except (RuntimeError, MemoryError):  # torch's errors (out of memory included): no estimate, no failure
        return
    channel.send(("probe", seconds))
