"""Which kind of checkpoint a path names, and what loading one did, without torch or transformers.

`klviz score | analyze | trajectory --ray` checks every path on the driver before Ray starts, and the
actors send back each load's LoadInfo; importing klviz.models there would cost the driver torch's and
transformers' import (~5-8 s on 2 cores), so these live here and klviz.models re-exports them.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from klviz.errors import KlvizError


@dataclass(frozen=True)
class LoadInfo:
    """What one load did, for the log and the dashboard."""

    role: str            # "policy", "sft", "policy base", ...
    kind: str            # "folder", "adapter", "gguf", "zip (folder)", "zip (adapter)"
    path: str            # the source as the user gave it
    dtype: object        # torch.dtype; its str() where it reaches a process without torch (klviz.distributed)
    device: str          # "cpu", "cuda:0", or "cuda:0,cuda:1 (device_map=auto)"
    n_params: int
    seconds: float
    base: str | None = None  # an adapter's base model

    def describe(self) -> str:
        """One line: `policy: adapter runs/lora on base models/sft, 1.2M params, bfloat16 on cuda:0, 3.1 s`."""
        base = f" on base {self.base}" if self.base else ""
        return (f"{self.role}: {self.kind} {self.path}{base}, {_fmt_count(self.n_params)} params, "
                f"{str(self.dtype).removeprefix('torch.')} on {self.device}, {self.seconds:.1f} s")



def _fmt_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?")
_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".ckpt")


def locate(source) -> tuple[str, Path]:
    """Which kind of source this is: ("folder"|"adapter"|"zip"|"gguf", path)."""
    text = str(source)
    path = Path(text).expanduser()
    if not path.exists():
        if _HUB_ID.fullmatch(text) and not text.lower().endswith((".zip", ".gguf", *_WEIGHT_SUFFIXES)):
            raise KlvizError(f"{text}: no such file or folder, and klviz works offline: "
                             "download the model to a folder and pass its path.")
        raise KlvizError(f"{text}: no such file or folder.")
    if path.is_dir():
        return _folder_kind(path, text), path
    if zipfile.is_zipfile(path):
        return "zip", path
    with path.open("rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return "gguf", path
    if path.suffix.lower() in (".zip", ".gguf"):
        raise KlvizError(f"{text} is not a valid {path.suffix.lower()[1:].upper()} file (its header is wrong).")
    if path.suffix.lower() in _WEIGHT_SUFFIXES:
        raise KlvizError(f"{text} is a bare weights file: pass the folder that holds it together with "
                         "its config.json and tokenizer files.")
    raise KlvizError(f"{text} is not a model folder, a .zip of one, or a .gguf file.")


def _folder_kind(path: Path, shown: str) -> str:
    if (path / "adapter_config.json").is_file():
        return "adapter"
    if (path / "config.json").is_file():
        return "folder"
    raise KlvizError(f"{shown} is neither a Hugging Face model folder (no config.json) "
                     "nor a PEFT adapter folder (no adapter_config.json).")
