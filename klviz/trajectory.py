"""A checkpoint series: the same responses scored under every checkpoint of a training run.

Checkpoints are found the way the transformers Trainer (and TRL's trainers, which subclass it) names
them: `<output_dir>/checkpoint-<global step>` (PREFIX_CHECKPOINT_DIR = "checkpoint" and the pattern
`^checkpoint\\-(\\d+)$` in transformers/trainer_utils.py). A checkpoint may be a full model or a LoRA
adapter (adapter_config.json), merged into its base (default: the SFT model).

The SFT side runs once (klviz.engine.reference): each checkpoint costs one policy decoder pass plus
the two heads, where separate `klviz score` runs would rerun the SFT decoder every time. Rows are
those `klviz score` writes for each (checkpoint, SFT) pair, with `checkpoint` and `step` columns first
(a logged rollout's own `step` becomes `rollout_step`).
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from klviz.errors import KlvizError

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")  # transformers.trainer_utils._re_checkpoint
ROLLOUT_STEP = "rollout_step"
"""A logged rollout's own `step` field, renamed: in a series `step` is the checkpoint's step."""


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of the series."""

    path: Path
    """Its folder (a model or a LoRA adapter)."""
    name: str
    """The `checkpoint` column: the folder's name, e.g. "checkpoint-200"."""
    step: int
    """The `step` column: N of checkpoint-N, else the last number in the name, else its rank in the list."""


def _is_model(p: Path) -> bool:
    return p.is_dir() and ((p / "config.json").is_file() or (p / "adapter_config.json").is_file())


def _expand(spec: str) -> list[Path]:
    """A folder of checkpoint-N folders, a checkpoint folder itself, a glob, or a comma-separated list."""
    out: list[Path] = []
    for part in (s for s in spec.split(",") if s):
        if any(c in part for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(part))
            if not matches:
                raise KlvizError(f"{part} matches no checkpoint folder.")
            out += [m for m in matches if _is_model(m)]
            continue
        p = Path(part)
        if not p.exists():
            raise KlvizError(f"{part}: no such checkpoint folder.")
        subs = [c for c in p.iterdir() if c.is_dir() and CHECKPOINT_DIR.match(c.name)] if p.is_dir() else []
        if subs and not _is_model(p):
            out += sorted(subs, key=lambda c: int(CHECKPOINT_DIR.match(c.name).group(1)))
        elif _is_model(p):
            out.append(p)
        else:
            raise KlvizError(f"{part} is neither a checkpoint (config.json or adapter_config.json) nor a folder "
                             "of checkpoint-<step> folders.")
    return out


def find_checkpoints(specs: list[str]) -> list[Checkpoint]:
    """The series, in step order; each spec as `_expand` reads it. One sentence if it is empty or ambiguous."""
    paths = [p for spec in specs for p in _expand(spec)]
    if not paths:
        raise KlvizError(f"No checkpoint found in {', '.join(specs)}.")
    out = []
    for rank, p in enumerate(paths):
        m = CHECKPOINT_DIR.match(p.name) or re.search(r"(\d+)(?!.*\d)", p.name)
        out.append(Checkpoint(p, p.name, int(m.group(1)) if m else rank))
    names = [c.name for c in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise KlvizError(f"Two checkpoints are named {dup}; the `checkpoint` column needs distinct names.")
    return sorted(out, key=lambda c: (c.step, c.name))


def trajectory_table(sft, tokenizer, checkpoints: list[Checkpoint], inputs: list, load: Callable,
                     *, top_k: int = 10, batch_size: int = 8, progress: bool = False,
                     log: Callable[[str], None] = lambda m: None):
    """The token table of `inputs` under each checkpoint against `sft`, SFT side computed once.

    load(checkpoint) -> klviz.models.LoadedModel; its tokenizer and logit count are checked against the
    SFT model's (as load_pair checks a pair). Each checkpoint's model is released before the next loads.
    """
    import pandas as pd

    from klviz.engine.divergence import token_frame
    from klviz.engine.reference import reference_side, score_tensors_against
    from klviz.models import check_same_tokenizer

    ref = reference_side(sft, inputs, batch_size=batch_size, progress=progress)
    frames = []
    for ck in checkpoints:
        loaded = load(ck)
        check_same_tokenizer(loaded.tokenizer, tokenizer, str(ck.path), "the SFT checkpoint")
        order, cols = score_tensors_against(loaded.model, ref, inputs, top_k=top_k, progress=progress,
                                            desc=f"scoring {ck.name}")
        del loaded
        df = token_frame(inputs, order, cols, tokenizer).rename(columns={"step": ROLLOUT_STEP})
        df.insert(0, "step", ck.step)
        df.insert(0, "checkpoint", ck.name)
        frames.append(df)
        log(f"{ck.name}: {len(df)} token rows")
    return pd.concat(frames, ignore_index=True)
