"""Thread settings every klviz process starts with (the CLI, the dashboard, their workers).

Torch-free on purpose: GNU OpenMP (the runtime of torch's Linux CPU wheels) reads OMP_* variables
once, when the library loads, so they must be set before the first `import torch`. `klviz.cli`
(the `klviz` script and `python -m klviz`) and app.py call `apply_thread_settings()` first thing;
worker processes they start inherit the environment.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

THREAD_ENV = {
    # OpenMP workers otherwise spin between parallel regions; on a busy 2-core machine the spinning
    # starves the threads doing the work (the sample pair's analysis took 2-27 s instead of ~1 s in
    # the app, and `klviz analyze` on SmolLM2 sampled 9x slower: 6:09 against 2:18). PASSIVE lets
    # idle workers sleep (OpenMP spec, OMP_WAIT_POLICY).
    "OMP_WAIT_POLICY": "PASSIVE",
}
"""Environment defaults applied before torch loads; a value the user already set is kept."""


def apply_thread_settings(environ=None) -> dict[str, str]:
    """Set each THREAD_ENV variable the user has not set; returns the variables in effect."""
    env = os.environ if environ is None else environ
    for name, value in THREAD_ENV.items():
        env.setdefault(name, value)
    return {name: env[name] for name in THREAD_ENV}


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads, then restore the caller's setting (tiny models on a
    busy 2-core machine: more threads only contend)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
