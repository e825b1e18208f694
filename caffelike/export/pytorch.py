"""``caffelike export -format pytorch``: ``DIR/model.py`` (readable source) and ``DIR/weights.pth``."""
from __future__ import annotations

import os

from ..glog import get_logger
from ..io.atomic import atomic_write
from .codegen import generate
from .describe import describe
from .module import TorchNet
from .weights import save_state_dict

log = get_logger("export")


def export_pytorch(net, out_dir: str | os.PathLike) -> tuple[str, str]:
    """Write ``model.py`` and ``weights.pth`` for a built (TEST) net; returns their paths."""
    plan = describe(net.graph)
    os.makedirs(out_dir, exist_ok=True)
    model_py = os.path.join(os.fspath(out_dir), "model.py")
    weights = os.path.join(os.fspath(out_dir), "weights.pth")
    with atomic_write(model_py, "w") as f:
        f.write(generate(plan))
    save_state_dict(TorchNet(plan), weights)
    log.info("Wrote %s and %s (inputs %s, outputs %s)", model_py, weights,
             ", ".join(n for n, _, _ in plan.inputs), ", ".join(n for n, _ in plan.outputs))
    return model_py, weights
