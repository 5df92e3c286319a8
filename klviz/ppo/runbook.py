"""A browser session's PPO runs: the newest few kept to overlay, every one stoppable at once.

No streamlit here: klviz/app/runs.py holds one RunBook per session in a session-scoped
st.cache_resource, whose release (the tab closed) calls `stop_all`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Run:
    """One PPO run of a browser session."""

    name: str
    """The label shown on the curves and in the saved policy's name."""
    job: object
    """Its klviz.ppo.jobs.PPOJob."""
    sft: str
    """The SFT checkpoint it trains against, as the pair source gave it."""
    estimator: str
    """The metric holding the chosen estimate, for the curves."""


class RunBook:
    """A session's PPO runs: the newest `max_runs` kept, to overlay; a running one is never dropped."""

    def __init__(self, max_runs: int = 4):
        self.max_runs, self.runs, self.count = max_runs, {}, 0
        self._figures: dict[str, tuple] = {}

    def figure(self, name: str, key, build):
        """The figure `name`, rebuilt only when `key` changes: the live panel redraws every
        poll, but its curves change only when a step ends."""
        cached = self._figures.get(name)
        if cached is None or cached[0] != key:
            cached = self._figures[name] = (key, build())
        return cached[1]

    def add(self, run: Run) -> None:
        self.runs[run.name] = run
        finished = [n for n, r in self.runs.items() if not r.job.running]
        while len(self.runs) > self.max_runs and finished:
            self.runs.pop(finished.pop(0))

    def latest(self) -> Run | None:
        return next(reversed(self.runs.values()), None)

    def any_running(self) -> bool:
        return any(r.job.running for r in self.runs.values())

    def stop_all(self) -> None:
        for run in self.runs.values():
            run.job.stop()
