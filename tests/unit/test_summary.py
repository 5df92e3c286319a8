"""`klviz summary --json` equals the figures computed here from the parquet with plain loops."""

import json
import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from klviz.cli import main
from klviz.io import write_table

SUMMED = ("kl_reverse", "kl_forward", "entropy_policy", "entropy_sft")


def _table(rng, steps=(0, 5)):
    rows = []
    for step in steps:
        for source in ("policy", "sft"):
            for prompt in ("a", "b"):
                for sample in range(2):
                    for pos in range(int(rng.integers(1, 5))):
                        rows.append({"source": source, "prompt_id": prompt, "sample_id": sample, "position": pos,
                                     "step": step, "checkpoint": f"checkpoint-{step}",
                                     **{c: float(rng.exponential()) for c in SUMMED}, "tv": float(rng.uniform())})
    return pd.DataFrame(rows)


def _brute(rows):
    """Figures from a list of row dicts, by hand."""
    seqs = defaultdict(list)
    for r in rows:
        seqs[(r["source"], r["prompt_id"], r["sample_id"], r["checkpoint"], r["step"])].append(r)
    out = {"n_sequences": len(seqs), "n_tokens": len(rows)}
    for c in SUMMED:
        out[f"{c}_per_token"] = sum(r[c] for r in rows) / len(rows)
    out["tv_per_token"] = sum(r["tv"] for r in rows) / len(rows)
    for c in SUMMED:
        out[f"{c}_per_sequence"] = sum(sum(r[c] for r in s) for s in seqs.values()) / len(seqs)
    out["tv_per_sequence"] = sum(sum(r["tv"] for r in s) / len(s) for s in seqs.values()) / len(seqs)
    return out


def _close(got, want):
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12), k


def test_summary_json_equals_brute_force(tmp_path, capsys):
    df = _table(np.random.default_rng(0))
    path = tmp_path / "t.parquet"
    write_table(df, path, {"command": "trajectory", "sft": "s"})
    assert main(["summary", str(path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    rows = df.to_dict("records")
    _close(got["overall"], _brute(rows))
    for source in ("policy", "sft"):
        _close(got["by_source"][source], _brute([r for r in rows if r["source"] == source]))
    assert sorted(got["by_step"]) == ["0", "5"]
    for step in (0, 5):
        _close(got["by_step"][str(step)], _brute([r for r in rows if r["step"] == step]))
    assert got["table"] == {"command": "trajectory", "sft": "s"}


def test_summary_text_and_bad_table(tmp_path, capsys):
    df = _table(np.random.default_rng(1), steps=(1,)).drop(columns=["step", "checkpoint"])
    path = tmp_path / "t.parquet"
    write_table(df, path, {})
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "overall" in out and "source=policy" in out and "step=" not in out
    bad = tmp_path / "bad.parquet"
    write_table(df.drop(columns=["tv"]), bad, {})
    assert main(["summary", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"klviz: error: {bad} is not a klviz token table: it has no tv column."
    assert main(["summary", str(tmp_path / "none.parquet")]) == 2


def test_summary_of_empty_group_is_null(tmp_path, capsys):
    df = _table(np.random.default_rng(2), steps=(1,)).iloc[:0]
    path = tmp_path / "t.parquet"
    write_table(df, path, {})
    assert main(["summary", str(path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["overall"]["n_tokens"] == 0 and got["overall"]["kl_reverse_per_token"] is None
    assert not math.isnan(got["overall"]["n_sequences"])


def test_summary_json_has_where_rl_acted_sections_equal_to_loops(tmp_path, capsys):
    rng = np.random.default_rng(3)
    df = _table(rng, steps=(1,))
    df["rank_sft"] = rng.integers(1, 7, len(df))
    df["entropy_change_first_order"] = rng.normal(size=len(df))
    path = tmp_path / "t.parquet"
    write_table(df, path, {})
    assert main(["summary", str(path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    rows = df.to_dict("records")
    policy = [r for r in rows if r["source"] == "policy"]  # token shift: the policy's own samples
    classes = ["unshifted" if r["rank_sft"] == 1 else "marginal" if r["rank_sft"] <= 3 else "shifted" for r in policy]
    for name in ("unshifted", "marginal", "shifted"):
        assert got["token_shift"][name] == pytest.approx(classes.count(name) / len(policy), rel=1e-12)
    by_entropy = sorted(rows, key=lambda r: -r["entropy_sft"])  # forking: the top 20% by SFT entropy, all rows
    top = by_entropy[:max(1, round(0.2 * len(rows)))]
    assert got["forking"]["entropy_sft_threshold"] == pytest.approx(min(r["entropy_sft"] for r in top), rel=1e-12)
    for kl in ("kl_reverse", "kl_forward"):
        want = sum(r[kl] for r in top) / sum(r[kl] for r in rows)
        assert got["forking"][f"share_{kl}"] == pytest.approx(want, rel=1e-12)
    exact = sum(r["entropy_policy"] - r["entropy_sft"] for r in rows) / len(rows)
    first = sum(r["entropy_change_first_order"] for r in rows) / len(rows)
    assert got["entropy"]["exact_change_mean"] == pytest.approx(exact, rel=1e-12)
    assert got["entropy"]["first_order_change_mean"] == pytest.approx(first, rel=1e-12)
