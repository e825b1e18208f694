"""``model.pt2``: the plain module as a ``torch.export`` ExportedProgram (``torch.export.save``).

Loadable without caffelike: ``torch.export.load(path).module()(*inputs)`` returns the same dict
of output blobs. The batch dimension is dynamic unless ``static_batch``.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn

from ..errors import CaffelikeError
from ..glog import get_logger

log = get_logger("export")

EXAMPLE_BATCH = 2  # torch.export specialises a size-1 dimension, so a dynamic batch is traced at 2


def export_pt2(module: nn.Module, shapes: Sequence[tuple[int, ...]], path: str | os.PathLike,
               static_batch: bool = False) -> None:
    """Trace ``module`` on zero inputs of ``shapes`` and save the ExportedProgram to ``path``."""
    if any(len(s) == 0 for s in shapes):
        raise CaffelikeError("pt2 export needs every input's shape (Input layers with a shape)")
    examples = []
    for shape in shapes:
        shape = list(shape)
        if not static_batch:
            shape[0] = max(shape[0], EXAMPLE_BATCH)
        examples.append(torch.zeros(shape, dtype=torch.float32))
    dynamic = None
    if not static_batch:
        batch = torch.export.Dim("batch")
        dynamic = {"inputs": tuple({0: batch} for _ in shapes)}
    was_training = module.training
    module.eval()
    try:
        program = torch.export.export(module, tuple(examples), dynamic_shapes=dynamic)
    except Exception as exc:  # torch's own message says which constraint failed
        hint = "; try --static_batch" if not static_batch else ""
        raise CaffelikeError(f"torch.export could not trace the net: {str(exc).splitlines()[0]}{hint}") from exc
    finally:
        module.train(was_training)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.export.save(program, os.fspath(path))
    log.info("Wrote %s (%s batch)", os.fspath(path), "static" if static_batch else "dynamic")
