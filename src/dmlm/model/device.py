"""Where and in what precision a run trains: ``training.device`` and ``training.precision``.

``auto`` picks CUDA when torch sees a GPU, else the CPU; on CUDA ``auto`` precision is bf16
autocast (weights and optimizer state stay fp32; matmuls and attention run in bf16, losses in fp32
as autocast upcasts cross-entropy), on the CPU fp32. OPT's attention is torch's SDPA on every
device (``backbone``), which on CUDA dispatches to the flash / memory-efficient kernels.
"""

from __future__ import annotations

import contextlib
import importlib.util

from dmlm.errors import DmlmError


def resolve_device(setting: str = "auto"):
    """``auto`` | ``cpu`` | ``cuda`` -> a ``torch.device`` (``cuda`` without a GPU is an error)."""
    import torch

    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise DmlmError("training.device: cuda was asked for, but torch sees no CUDA device here")
    if setting not in ("cpu", "cuda"):
        raise DmlmError(f"training.device: expected auto, cpu or cuda, got {setting!r}")
    return torch.device(setting)


def resolve_precision(setting: str, device) -> str:
    """``auto`` | ``fp32`` | ``bf16`` -> ``fp32`` or ``bf16`` for ``device``."""
    import torch

    if setting == "auto":
        setting = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if setting == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DmlmError("training.precision: bf16 was asked for, but this GPU does not support it")
    if setting not in ("fp32", "bf16"):
        raise DmlmError(f"training.precision: expected auto, fp32 or bf16, got {setting!r}")
    return setting


def autocast(device, precision: str):
    """The autocast context of a forward pass (a no-op for fp32)."""
    import torch

    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_family_device(family: str, device, backbone_name: str = "?") -> None:
    """mamba-ssm's kernels, once installed, replace transformers' Mamba code paths for every device
    and work on CUDA tensors only: a Mamba on the CPU then fails deep in a kernel. Say so first."""
    if family == "mamba" and device.type == "cpu" and importlib.util.find_spec("mamba_ssm") is not None:
        raise DmlmError(
            f"backbones.{backbone_name}: mamba-ssm is installed, and its kernels run on CUDA only; "
            "train this Mamba with training.device: cuda (or use an environment without mamba-ssm)"
        )
