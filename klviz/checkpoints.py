"""Checkpoint files before a model is built from them: zip extraction, pickle checks, memory.

Everything here refuses bad input before anything is written or any checkpoint byte is unpickled
into live objects: a .zip's entries are all checked (`_check_zip`) first; a pickle must pass
`torch.load(weights_only=True)` (whose unpickler runs no code); the weights must fit in free memory.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from klviz.errors import KlvizError
from klviz.sources import _fmt_count

MAX_UNPACKED_BYTES = 64 * 2**30
"""Largest total unpacked size of a checkpoint .zip (64 GiB: a ~30B-parameter model in bf16).
Bigger checkpoints should be unpacked by hand and passed as folders."""
MAX_ZIP_ENTRIES = 10_000
"""Most entries a checkpoint .zip may hold (a sharded model has tens of files, not thousands)."""
MEMORY_HEADROOM = 1.2
"""Weights x this must fit in free memory: room for activations, the KV cache and logit chunks."""

# ---- memory ----------------------------------------------------------------------------------

def count_params(config) -> int:
    """Parameters of the model `config` describes, counted on the meta device (no memory used)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    return sum(p.numel() for p in model.parameters())


def _free_bytes(dev: torch.device) -> list[int] | None:
    """Free memory per device of `dev`'s type (one entry per GPU), or None when unknown."""
    if dev.type == "cuda":
        return [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]
    if dev.type == "mps":
        try:
            return [torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()]
        except (AttributeError, RuntimeError):
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            info = dict(line.split(":", 1) for line in f)
        return [int(info["MemAvailable"].split()[0]) * 1024]
    except (OSError, KeyError, ValueError):
        return None


def placement(n_params: int, dt: torch.dtype, dev: torch.device, shown: str, role: str):
    """(from_pretrained placement kwargs, device description), or a KlvizError if it can't fit.

    One device when the weights (x MEMORY_HEADROOM) fit on it; with several GPUs and `--device
    cuda`, accelerate's device_map="auto" spreads a model too big for one across all of them.
    """
    need = n_params * dt.itemsize * MEMORY_HEADROOM
    free = _free_bytes(dev)
    index = dev.index if dev.index is not None else 0
    if free is None or need <= free[min(index, len(free) - 1)]:
        if dev.type == "cuda":
            return {"device_map": {"": f"cuda:{index}"}}, f"cuda:{index}"
        return {}, str(dev)
    if dev.type == "cuda" and dev.index is None and len(free) > 1 and need <= sum(free):
        max_memory = {i: int(f / MEMORY_HEADROOM) for i, f in enumerate(free)}
        where = ",".join(f"cuda:{i}" for i in range(len(free)))
        return {"device_map": "auto", "max_memory": max_memory}, f"{where} (device_map=auto)"
    have = sum(free) if dev.type == "cuda" and dev.index is None else free[min(index, len(free) - 1)]
    raise KlvizError(f"{shown}: the {role} model needs about {need / 2**30:.1f} GiB "
                     f"({_fmt_count(n_params)} params in {str(dt).removeprefix('torch.')}) but only "
                     f"{have / 2**30:.1f} GiB is free on {dev.type}: choose a smaller --dtype, a smaller "
                     "model, or a machine with more memory.")


# ---- zip -------------------------------------------------------------------------------------

def _check_zip(infos: list[zipfile.ZipInfo], shown: str, dest: Path) -> None:
    """Refuse the whole archive before writing anything: absolute paths, `..`, symlinks, size."""
    if len(infos) > MAX_ZIP_ENTRIES:
        raise KlvizError(f"{shown} holds {len(infos)} entries, more than the {MAX_ZIP_ENTRIES} a checkpoint may have.")
    total = 0
    for info in infos:
        name = info.filename
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
            raise KlvizError(f"{shown} holds an entry with an absolute path ({name}), so it is refused.")
        if ".." in re.split(r"[\\/]", name):
            raise KlvizError(f"{shown} holds an entry that climbs out of the folder ({name}), so it is refused.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise KlvizError(f"{shown} holds a symbolic link ({name}), so it is refused.")
        if info.flag_bits & 0x1:
            raise KlvizError(f"{shown} holds an encrypted entry ({name}): unzip it yourself and pass the folder.")
        total += info.file_size
    if total > MAX_UNPACKED_BYTES:
        raise KlvizError(f"{shown} unpacks to {total / 2**30:.1f} GiB, over klviz's limit of "
                         f"{MAX_UNPACKED_BYTES / 2**30:.0f} GiB for a .zip: unzip it yourself and pass the folder.")
    free = shutil.disk_usage(dest).free
    if total > free:
        raise KlvizError(f"{shown} unpacks to {total / 2**30:.1f} GiB but only {free / 2**30:.1f} GiB "
                         f"is free in {dest.parent}: free some space or unzip it elsewhere and pass the folder.")


def extract_zip(path: Path, dest: Path, shown: str | None = None) -> Path:
    """Check every entry, then unpack `path` into `dest`; return the model folder inside."""
    shown = shown or str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            _check_zip(infos, shown, dest)
            root = dest.resolve()
            for info in infos:
                target = (dest / info.filename).resolve()
                if root not in target.parents and target != root:  # belt and braces after _check_zip
                    raise KlvizError(f"{shown} holds an entry that climbs out of the folder ({info.filename}).")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, 2**20)  # reads at most info.file_size bytes
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as e:
        raise KlvizError(f"{shown} could not be unpacked ({e}).") from None
    return _zip_root(dest, shown)


def _zip_root(dest: Path, shown: str) -> Path:
    """The folder holding config.json/adapter_config.json: the top, or its single subfolder."""
    if (dest / "config.json").is_file() or (dest / "adapter_config.json").is_file():
        return dest
    subdirs = [d for d in dest.iterdir() if d.is_dir() and d.name != "__MACOSX"]
    if len(subdirs) == 1:
        return subdirs[0]
    raise KlvizError(f"{shown} holds no model folder: zip a folder with config.json "
                     "(or adapter_config.json) at its top.")


def check_pickle(path: Path, shown: str) -> None:
    """Refuse a pickle that torch.load(weights_only=True) rejects; the unpickler runs no code. Messages name the
    file as `shown` (the user's checkpoint and the file in it, never the server's path)."""
    if not path.is_file():
        raise KlvizError(f"{shown} is listed in the checkpoint but missing.")
    try:
        try:
            torch.load(path, map_location="meta", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            torch.load(path, map_location="meta", weights_only=True)  # an old, non-zip pickle
    except Exception as e:  # noqa: BLE001 - any failure means "not plain tensors"
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        why = f"it asks to call {found.group(1)}" if found else type(e).__name__
        raise KlvizError(f"{shown} is a pickle that torch.load(weights_only=True) refuses ({why}), and klviz "
                         "never runs code from a checkpoint: convert it to safetensors with a tool you trust.") from None
