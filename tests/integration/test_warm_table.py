"""The dashboard's shipped default-view table (klviz.shipped_view): current, exact, and used only when it fits.

The table in sample_data/ must be what the dashboard would compute now: its key matches the shipped
files and settings, a fresh `settings_table` on the CPU in float32 gives the same rows and numbers,
and its rows agree with a float64 brute force over the whole vocabulary.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from klviz import shipped_view
from klviz.engine.columns import BAND_COLUMNS, RANK_COLUMNS, SCALAR_COLUMNS, TOP_COLUMNS
from klviz.sampling import settings_table
from klviz.settings import TOP_K, SamplingSettings
from tests.helpers.brute import assert_row_close, brute_row

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"
POLICY, SFT, PROMPTS = SAMPLE / "policy", SAMPLE / "sft", SAMPLE / "prompts.jsonl"
REGENERATE = "regenerate it: python -c \"import klviz.shipped_view as w; w.write_warm_table('sample_data')\""


@pytest.fixture(scope="module")
def shipped() -> pd.DataFrame:
    key = shipped_view.warm_key(POLICY, SFT, PROMPTS, SamplingSettings())
    table = shipped_view.read_warm_table(SAMPLE / shipped_view.WARM_TABLE, key)
    assert table is not None, f"sample_data/{shipped_view.WARM_TABLE} is missing or stale; {REGENERATE}"
    return table


@pytest.fixture(scope="module")
def pair():
    from klviz.models import load_pair

    return load_pair(str(POLICY), str(SFT), device="cpu", dtype="float32")


# Both tables are float32 forward passes, but not always on the same CPU kernels: the shipped one was
# computed on an AVX-512 machine, and an AVX2 machine sums the same matmuls in another order (observed:
# 2.6e-6 on logp_policy, 4.1e-6 on log_ratio, a difference of two such logs). Each table is within
# rtol 1e-5 / atol 1e-6 of the float64 brute force (the test below), so two of them may differ by the
# sum of both errors, absolute for differences of logs: atol 1e-5 nats. Ids, tokens and ranks must
# match exactly.
FLOAT32_KERNELS = dict(rtol=1e-5, atol=1e-5)


def test_shipped_table_is_what_the_dashboard_computes_now(shipped, pair):
    from klviz.prompts import read_prompts

    fresh = settings_table(pair, read_prompts(str(PROMPTS)), SamplingSettings())
    assert list(fresh.columns) == list(shipped.columns)
    for col in ("prompt_id", "sample_id", "position", "token_id", "token", "source"):
        assert fresh[col].tolist() == shipped[col].tolist(), f"{col} differs; {REGENERATE}"
    for col in SCALAR_COLUMNS:
        np.testing.assert_allclose(shipped[col], fresh[col], err_msg=col, **FLOAT32_KERNELS)
    for col in RANK_COLUMNS:
        assert shipped[col].tolist() == fresh[col].tolist(), col
    for col in BAND_COLUMNS + TOP_COLUMNS:
        np.testing.assert_allclose(np.stack(shipped[col]), np.stack(fresh[col]), err_msg=col, **FLOAT32_KERNELS)


@torch.no_grad()
def test_shipped_rows_match_a_float64_brute_force(shipped, pair):
    from klviz.prompts import read_prompts

    texts = {str(p.id): p.text for p in read_prompts(str(PROMPTS))}
    policy, sft = _float64(pair.policy), _float64(pair.sft)  # copies: the pair's models stay float32
    for (prompt_id, sample_id), rows in list(shipped.groupby(["prompt_id", "sample_id"], sort=False))[:3]:
        prompt = pair.tokenizer(texts[prompt_id]).input_ids
        ids = torch.tensor([prompt + rows.sort_values("position")["token_id"].tolist()])
        lp, lq = policy(ids).logits[0], sft(ids).logits[0]
        for _, row in rows.sort_values("position").head(4).iterrows():
            t = len(prompt) + int(row["position"]) - 1  # logits at P+t-1 predict response token t
            want = brute_row(lp[t].tolist(), lq[t].tolist(), int(row["token_id"]), top_k=TOP_K)
            assert_row_close(row.to_dict(), want, rtol=1e-5, atol=1e-6)


def _float64(model):
    import copy

    return copy.deepcopy(model).double().eval()


def test_the_key_covers_settings_and_contents(tmp_path):
    settings = SamplingSettings()
    key = shipped_view.warm_key(POLICY, SFT, PROMPTS, settings)
    assert shipped_view.warm_key(POLICY, SFT, PROMPTS, replace(settings, seed=1)) != key
    assert shipped_view.warm_key(POLICY, SFT, PROMPTS, replace(settings, prompts="elsewhere.jsonl")) == key  # by content
    copy = tmp_path / "prompts.jsonl"
    copy.write_text(PROMPTS.read_text() + '{"prompt": "Review: one more"}\n')
    assert shipped_view.warm_key(POLICY, SFT, copy, settings) != key
    assert shipped_view.warm_key(SFT, POLICY, PROMPTS, settings) != key
    assert shipped_view.read_warm_table(SAMPLE / shipped_view.WARM_TABLE, "not-the-key") is None
    assert shipped_view.read_warm_table(tmp_path / "missing.parquet", key) is None


def test_only_a_cpu_float32_choice_uses_it():
    assert shipped_view.runs_on_cpu_float32("cpu", "auto") and shipped_view.runs_on_cpu_float32("cpu", "float32")
    assert not shipped_view.runs_on_cpu_float32("cpu", "bfloat16")
    assert not shipped_view.runs_on_cpu_float32("cuda", "auto") and not shipped_view.runs_on_cpu_float32("mps", "auto")
    assert shipped_view.runs_on_cpu_float32("auto", "auto") == (not torch.cuda.is_available()
                                                        and not torch.backends.mps.is_available())


def test_the_first_view_imports_neither_torch_nor_pandas():
    # What app.py and the Overview import before the default view's chart is sent (pandas and
    # pyarrow load after it, for the token table; torch once the pair loads).
    code = ("import sys; import klviz.app.first_view, klviz.app.data, klviz.app.downloads, klviz.app.feedback, "
            "klviz.app.keys, klviz.app.view, klviz.views.plots, klviz.shipped_view, klviz.views.report; "
            "print(sorted(m for m in ('torch', 'pandas', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_shipped_view_is_what_the_overview_computes_from_the_table(shipped):
    # The Overview draws sample_data/dashboard_view.json on the default view: it must be exactly
    # tables.headline and tables.band_totals of the shipped table (checked above against a brute force).
    key = shipped_view.warm_key(POLICY, SFT, PROMPTS, SamplingSettings())
    view = shipped_view.read_warm_view(SAMPLE / shipped_view.WARM_VIEW, key)
    assert view is not None, f"sample_data/{shipped_view.WARM_VIEW} is missing or stale; {REGENERATE}"
    from klviz.views import tables

    assert view["headline"] == tables.headline(shipped)
    bands = tables.band_totals(shipped)
    assert view["bands"] == {c: bands[c].tolist() for c in shipped_view.VIEW_BAND_COLUMNS}
    assert shipped_view.read_warm_view(SAMPLE / shipped_view.WARM_VIEW, "not-the-key") is None


def test_a_broken_view_file_is_ignored(tmp_path):
    for text in ("{not json", "[1, 2]", '{"warm_key": "k"}'):
        (tmp_path / "view.json").write_text(text)
        assert shipped_view.read_warm_view(tmp_path / "view.json", "other") is None
    assert shipped_view.read_warm_view(tmp_path / "missing.json", "k") is None
