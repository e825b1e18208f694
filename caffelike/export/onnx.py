"""A deploy net and its weights as an ONNX model (``caffelike export``).

Builds the TEST-phase net with its weights, traces one forward pass (of the plain module of
:func:`caffelike.export.to_torch` when the exporter covers every layer) on the Input shapes of
the prototxt and writes an ONNX model whose inputs are the net's inputs and whose outputs
are the net's outputs (same names as the Caffe blobs). ``--check`` then runs the file with
onnxruntime (if installed) on random input and compares with caffelike's own forward.
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np

from ..errors import CaffelikeError
from ..glog import get_logger

log = get_logger("export")


def export(model: str, weights: str | None, out: str, opset: int = 17, batch: int | None = None,
           dynamic_batch: bool = True, outputs: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """Write ``out`` (ONNX) for the deploy net; returns (input names, output names)."""
    import torch

    import caffelike as caffe
    from ..accel import NetOutputs

    net = caffe.Net(model, caffe.TEST, weights=weights) if weights else caffe.Net(model, caffe.TEST)
    net.eval()
    inputs = list(net.inputs)
    if not inputs:
        raise CaffelikeError(f"{model}: the net has no Input layer (or input fields); "
                             "export needs a deploy net whose inputs are fed from outside")
    outs = list(outputs) if outputs else list(net.outputs)
    for name in outs:
        if name not in net.blobs:
            raise CaffelikeError(f"{model}: output blob '{name}' is not in the net")
    examples = []
    for name in inputs:
        shape = list(net.blobs[name].data.shape)
        if batch:
            shape[0] = batch
        examples.append(torch.zeros(shape, dtype=torch.float32))
    module = _plain_outputs(net, outs) or NetOutputs(net, inputs, outs)
    dynamic_axes = {n: {0: "batch"} for n in (*inputs, *outs)} if dynamic_batch else None
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # shape checks inside layers become trace-time constants: expected, not a problem
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # the tracing exporter (dynamo=False) needs no onnxscript; torch flags it as legacy
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, tuple(examples), out, input_names=inputs, output_names=outs,
                          opset_version=opset, dynamic_axes=dynamic_axes, dynamo=False,
                          do_constant_folding=True)
    log.info("Wrote %s (inputs %s, outputs %s)", out, ", ".join(inputs), ", ".join(outs))
    return inputs, outs


def _plain_outputs(net, outputs: Sequence[str]):
    """The plain module (:func:`caffelike.export.to_torch`) returning ``outputs`` as a tuple, when
    the exporter covers every layer and ``outputs`` are the net's; else None (trace the net).
    The plain module has no shape-dependent Python (e.g. global pooling), so more nets trace."""
    from ..errors import LayerError
    from .module import OutputTuple, to_torch

    if list(outputs) != list(net.outputs):
        return None
    try:
        return OutputTuple(to_torch(net), outputs)
    except LayerError:
        return None


def check(model: str, weights: str | None, onnx_path: str, seed: int = 0,
          batch: int = 2) -> float:
    """Max |onnxruntime - caffelike| over the outputs on random input (scale-relative)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise CaffelikeError("--check needs onnxruntime: pip install 'caffelike[onnx]'") from None
    import caffelike as caffe

    net = caffe.Net(model, caffe.TEST, weights=weights) if weights else caffe.Net(model, caffe.TEST)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in sess.get_inputs():
        shape = list(net.blobs[i.name].data.shape)
        shape[0] = batch if isinstance(i.shape[0], str) else shape[0]
        feeds[i.name] = rng.standard_normal(shape).astype(np.float32) * 50
    ours = net.forward_all(**feeds)
    worst = 0.0
    for o, value in zip(sess.get_outputs(), sess.run(None, feeds)):
        ref = np.asarray(ours[o.name])
        worst = max(worst, float(np.max(np.abs(value - ref)) / max(1.0, float(np.max(np.abs(ref))))))
    return worst

