"""`make_sample_data`: the corpus, tokenizer, SFT model, PPO policies and prompts of sample_data/.

Everything is written into a hidden folder beside `out` and renamed onto `out` at the end, so an
interrupted run never leaves a half-written sample folder. Same config, same machine, same files:
every random choice is seeded and torch runs on a fixed number of threads.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from klviz.errors import KlvizError
from klviz.io import atomic_path
from klviz.sample.corpus import GrammarConfig, make_corpus
from klviz.sample.policies import POLICY_FOLDERS, PolicyConfig, train_policies
from klviz.sample.prompts import sample_prompts, write_prompts
from klviz.sample.readme import render
from klviz.sample.measure import MeasureSettings, measure
from klviz.sample.tokenizer import DEFAULT_VOCAB_SIZE, save_tokenizer, train_tokenizer
from klviz.threads import torch_threads
from klviz.sample.train_sft import SFTConfig, build_model, encode, perplexity, train_sft
from klviz.shipped_view import write_warm_table

MANIFEST = "klviz_sample.json"
"""Written last into every sample folder; its presence marks a folder klviz may replace."""
FILE_MODE = 0o644
"""Permissions of README.md and the manifest (atomic_path's temporary files start private)."""


@dataclass(frozen=True)
class SampleConfig:
    """Everything that determines the sample data."""

    n_train: int = 30_000
    """Training reviews drawn from the grammar."""
    n_heldout: int = 1_000
    """Held-out reviews (an independent draw) for perplexity."""
    corpus_seed: int = 0
    """Seed of the training draw."""
    heldout_seed: int = 1
    """Seed of the held-out draw."""
    vocab_size: int = DEFAULT_VOCAB_SIZE
    """Byte-level BPE vocabulary size asked for."""
    grammar: GrammarConfig = field(default_factory=GrammarConfig)
    """The review grammar's probabilities."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """SFT model size and training."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """The two PPO runs."""
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    """Sampling for the README's reward and KL figures."""


FULL = SampleConfig()
"""What ships in sample_data/: about 5 minutes of SFT and the rest PPO, on 2 CPU cores."""

QUICK = SampleConfig(
    n_train=3_000,
    n_heldout=200,
    sft=SFTConfig(n_embd=64, n_layer=2, n_head=2, steps=150, warmup_steps=20, batch_size=32, threads=1),
    policy=PolicyConfig.quick(),
    measure=MeasureSettings(samples_per_prompt=1),
)
"""A minute or so, for tests: same pipeline, barely trained models."""


def _logger(progress: bool) -> Callable[[str], None]:
    if not progress:
        return lambda _: None
    return lambda msg: print(f"[make-sample-data] {msg}", file=sys.stderr, flush=True)


def check_out(out: Path) -> None:
    """Refuse to replace anything that is not an earlier klviz sample folder (or empty)."""
    if out.exists() and not out.is_dir():
        raise KlvizError(f"{out} is a file, not a folder: choose another --out.")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise KlvizError(f"{out} exists and is not a klviz sample folder (no {MANIFEST}): "
                         "choose another --out or remove it.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(out: Path) -> None:
    """Delete hidden partial folders that killed runs (SIGKILL, SIGTERM) left beside `out`."""
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished `tmp` onto `out`, moving any earlier sample folder aside first."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _make_sft(folder: Path, cfg: SampleConfig, log: Callable[[str], None]):
    """Corpus -> tokenizer -> trained SFT model, saved to `folder`. Returns (model, tokenizer, facts)."""
    train_texts = make_corpus(cfg.n_train, cfg.corpus_seed, cfg.grammar)
    heldout_texts = make_corpus(cfg.n_heldout, cfg.heldout_seed, cfg.grammar)
    tokenizer = train_tokenizer(train_texts, cfg.vocab_size)
    train_rows, heldout_rows = encode(tokenizer, train_texts), encode(tokenizer, heldout_texts)
    log(f"corpus: {len(train_texts)} training reviews ({sum(map(len, train_rows))} tokens), vocab {len(tokenizer)}")
    model = build_model(tokenizer, cfg.sft)
    run = train_sft(model, train_rows, tokenizer.pad_token_id, cfg.sft, log=log)
    ppl = perplexity(model, heldout_rows, tokenizer.pad_token_id)
    log(f"sft: held-out perplexity {ppl:.3f}")
    model.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    facts = {
        "train_reviews": len(train_texts),
        "train_tokens": sum(map(len, train_rows)),
        "unique_train_reviews": len(set(train_texts)),
        "heldout_reviews": len(heldout_texts),
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "heldout_perplexity": ppl,
        "train": run,
    }
    return model, tokenizer, facts


def _build(tmp: Path, cfg: SampleConfig, log: Callable[[str], None]) -> dict:
    started = time.perf_counter()
    prompts = sample_prompts()
    write_prompts(prompts, tmp / "prompts.jsonl")
    sft, tokenizer, sft_facts = _make_sft(tmp / "sft", cfg, log)
    policy_facts = train_policies(sft, tokenizer, [p["prompt"] for p in prompts], tmp, cfg.policy, log)
    log(f"dashboard: default view written to {write_warm_table(tmp).name}")
    manifest = {
        "config": asdict(cfg),
        "prompts": len(prompts),
        "sft": sft_facts,
        "policies": policy_facts,
        "folders": ["sft", *POLICY_FOLDERS],
        "seconds": time.perf_counter() - started,
    }
    return write_report(tmp, manifest, log)


def write_report(folder: Path, manifest: dict, log: Callable[[str], None]) -> dict:
    """Measure each policy in `folder`, then write README.md and the manifest (with the figures) there."""
    settings = MeasureSettings(**manifest["config"]["measure"])
    figures = {name: measure(folder, name, settings) for name in POLICY_FOLDERS}
    for name, f in figures.items():
        log(f"{name}: reward {f['policy']['reward_mean']:+.3f} (sft {f['sft']['reward_mean']:+.3f}), "
            f"KL(policy||sft) {f['policy']['kl_reverse_per_token']:.4f}/token")
    manifest = {**manifest, "figures": figures}
    texts = {"README.md": render(folder, manifest, figures), MANIFEST: json.dumps(manifest, indent=2) + "\n"}
    for name, text in texts.items():  # the manifest last: its presence marks a finished folder
        with atomic_path(folder / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
            tmp.chmod(FILE_MODE)  # mkstemp makes it private; these are shipped, readable files
    return manifest


def make_sample_data(out: Path, quick: bool = False, progress: bool = True) -> dict:
    """Write sft/, policy/, policy_k3_loss/, prompts.jsonl, README.md and klviz_sample.json into `out`.

    `quick` trains tiny models in about a minute (for tests); the default is what ships. Returns the
    manifest (sizes, parameter count, held-out perplexity, PPO metrics, timings).
    """
    out = Path(out)
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        cfg = QUICK if quick else FULL
        with torch_threads(cfg.sft.threads):
            manifest = _build(tmp, cfg, _logger(progress))
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
