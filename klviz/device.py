"""Device and dtype choice: CUDA (bf16 weights, fp32 math), then MPS, then CPU (float32)."""

from __future__ import annotations

import torch

from klviz.errors import KlvizError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """Turn "auto"/"cpu"/"cuda"/"mps" into a torch.device that exists on this machine."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise KlvizError(f"Unknown device {name!r}: use one of {', '.join(DEVICES)}.")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KlvizError(f"Device {name!r} was asked for but no CUDA GPU is visible: use --device cpu or auto.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise KlvizError("Device 'mps' was asked for but MPS is not available: use --device cpu or auto.")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weights' dtype: "auto" is bfloat16 on CUDA and float32 elsewhere.

    Whatever the weights, every divergence is computed in float32 (each logit chunk is upcast).
    """
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise KlvizError(f"Unknown dtype {name!r}: use auto, {', '.join(DTYPES)}.")
    return DTYPES[name]
