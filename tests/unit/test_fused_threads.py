"""The fused CPU sweep under shared cores: positions claimed one by one (klviz.engine.fused_cpu._claim)
give every position exactly once, and numba's own OpenMP runtime starts with the sleeping wait policy."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from klviz.engine.columns import BAND_EDGES
from klviz.engine.fused_cpu import HAVE_NUMBA, fused_token_stats
from klviz.threads import THREAD_ENV

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason="numba missing")


@pytest.mark.parametrize("n,threads", [(0, 2), (1, 2), (37, 2), (37, 1)])
def test_each_position_is_computed_once_whatever_thread_claims_it(n, threads):
    g = torch.Generator().manual_seed(n)
    pol, sft = torch.randn(n, 700, generator=g) * 3, torch.randn(n, 700, generator=g) * 3
    ids = torch.randint(0, 700, (n,), generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        together = fused_token_stats(pol, sft, ids, 5, BAND_EDGES)
    finally:
        torch.set_num_threads(before)
    assert all(len(v) == n for v in together.values())
    for i in range(n):  # a position skipped or done twice (by two threads) would differ from it alone
        alone = fused_token_stats(pol[i:i + 1], sft[i:i + 1], ids[i:i + 1], 5, BAND_EDGES)
        for name, col in alone.items():
            assert torch.equal(together[name][i:i + 1], col), name


def test_the_sweep_sets_the_wait_policy_before_numba_loads_its_openmp_runtime():
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    env["PYTHONPATH"] = str(ROOT)
    probe = ("import os, torch\nfrom klviz.engine.fused_cpu import fused_token_stats\n"
             "print(os.environ.get('OMP_WAIT_POLICY'))\n")
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == THREAD_ENV["OMP_WAIT_POLICY"]
