"""Where and in what precision the torch engines (transformers translator and tagger) run."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


def resolve_device(device: str) -> Any:
    """A torch.device from "auto" (cuda when a GPU is visible, else cpu), "cpu", "cuda" or "cuda:N"; a clear
    ValueError for a device this machine does not have."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"not a device: {device!r} (use auto, cpu, cuda or cuda:N)") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but there are {torch.cuda.device_count()} GPUs")
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r} (use auto, cpu, cuda or cuda:N)")
    return dev


def resolve_dtype(dtype: str, device: Any) -> Any:
    """"auto": bf16 on a GPU that has it, else fp16 on GPU, float32 on CPU. Half precision asked for on a CPU
    falls back to float32 with a warning (slower there and numerically different; one config can then serve
    GPU and CPU nodes alike)."""
    import torch

    name = dtype.lower()
    if name == "auto" and device.type != "cuda":
        name = "float32"
    elif name == "auto":
        name = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (use auto, float32, float16 or bfloat16)")
    name = _DTYPES[name]
    if name != "float32" and device.type != "cuda":
        log.warning("half precision needs a GPU: running in float32 on %s", device, extra={"dtype": dtype})
        name = "float32"
    return getattr(torch, name)
