"""``weights.pth``: the plain module's state_dict, loadable with ``torch.load(..., weights_only=True)``."""
from __future__ import annotations

import os

import torch
from torch import nn

from ..io.atomic import atomic_write


def save_state_dict(module: nn.Module, path: str | os.PathLike) -> None:
    """Write ``module``'s state_dict (plain tensors, contiguous, on the CPU) to ``path`` atomically."""
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    with atomic_write(os.fspath(path), "wb") as f:
        torch.save(state, f)
