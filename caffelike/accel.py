"""Fast paths that leave results within float tolerance: torch.compile, AMP, channels_last, cuDNN.

* :func:`compile_net` wraps the net's eager pass in ``torch.compile`` (``-compile`` /
  ``compile=True``); with ``install=True`` the net's ``run`` uses it (``Net.set_runner``), so
  the solver and tools pick it up without knowing.
* :func:`autocast` is the ``-amp bf16|fp16`` context (a no-op without AMP); :class:`LossScaler`
  is dynamic loss scaling for fp16 (Caffe's update rules need unscaled diffs, so the scaler
  divides them back before the update and skips a step whose gradients overflowed).
* :func:`use_channels_last` asks each layer to store its weights channels_last where it
  prefers that (4-axis convolutions), which helps on CUDA under AMP (tensor cores) and lets
  oneDNN skip reorders on the CPU; :func:`use_channels_last_cpu` is the CPU training
  layout, chosen per convolution; :func:`channels_last_auto` says when the solver does either.
* :func:`configure_backends` sets cuDNN autotuning (and keeps TF32 off unless asked, since
  goldens are float32).
* :func:`inference` is the no-autograd context of deploy forwards; :class:`NetOutputs` and
  :class:`OnnxRuntimeEngine` are the ONNX export module and the ``-engine onnxruntime`` path.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from .errors import CaffelikeError
from .glog import get_logger
from .layers.base import Delegating, stored_nhwc

log = get_logger("accel")

AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str | None) -> torch.dtype | None:
    """The autocast dtype for ``-amp`` (None/''/'off' = no AMP); unknown names are user errors."""
    if amp in (None, "", "off", "none", "fp32"):
        return None
    try:
        return AMP_DTYPES[amp]
    except KeyError:
        raise CaffelikeError(f"unknown -amp value '{amp}'; known: {', '.join(AMP_DTYPES)} (or off)") from None


def autocast(device: torch.device | str, amp: str | None) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass on ``device``; a null context without AMP."""
    dtype = amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    if device_type == "cpu" and dtype == torch.float16:
        log.warning("-amp fp16 on the CPU is slow and unscaled there; use bf16")
    return torch.autocast(device_type=device_type, dtype=dtype)


def configure_backends(cudnn_benchmark: bool = True, allow_tf32: bool = False) -> None:
    """cuDNN autotuning on (fixed input shapes make it pay off); TF32 off unless asked."""
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32


# -- torch.compile ------------------------------------------------------------------------------
def compile_net(net, *, mode: str | None = None, backend: str = "inductor", dynamic: bool = False,
                install: bool = False) -> Callable[[Mapping[str, torch.Tensor] | None], dict]:
    """``torch.compile`` of the net's eager pass; with ``install`` the net's ``run`` uses it.

    Pass every Input blob in ``inputs`` (reading the pycaffe blobs inside the compiled region
    costs a graph break). Parameters are read at call time, so loaded weights are seen.
    """
    compiled = torch.compile(net.eager_run, mode=mode, backend=backend, dynamic=dynamic)
    if install:
        net.set_runner(compiled)
    return compiled


def uncompile_net(net) -> None:
    """Undo ``compile_net(..., install=True)``."""
    net.set_runner(None)


# -- channels_last ------------------------------------------------------------------------------
# Layer types that compute the same values on channels_last (NHWC-strided) activations and
# keep that layout in their outputs and gradients (no ``.view`` of their bottoms; InnerProduct
# flattens in Caffe's C, H, W order). The CPU rule below turns channels_last on only for nets
# made of these alone.
CHANNELS_LAST_CPU_TYPES = frozenset({
    "Input", "Data", "ImageData", "MemoryData", "HDF5Data", "DummyData",
    "Convolution", "BatchNorm", "Scale", "Bias", "ReLU", "Sigmoid", "TanH", "AbsVal", "Power",
    "Dropout", "Pooling", "Eltwise", "Concat", "Split", "Silence", "InnerProduct",
    "Softmax", "SoftmaxWithLoss", "Accuracy",
})


def channels_last_auto(net, device: torch.device | str, amp: str | None) -> bool:
    """Whether the solver runs ``net`` channels_last when not told.

    On CUDA with AMP for nets of mostly 2-D convolutions (tensor cores). On the CPU in fp32
    for nets with at least two plain 2-D convolutions (groups of one) whose layers are all
    :data:`CHANNELS_LAST_CPU_TYPES`; the solver then picks the layout per convolution
    (:func:`use_channels_last_cpu`). oneDNN's NHWC convolutions, forward and backward, and
    torch's NHWC pooling beat the NCHW ones at the bench nets' sizes (one thread, CPU time of
    a training step, torch 2.13: cifar10_quick 95 -> 58 ms, LeNet 25 -> 19 ms).
    """
    pairs = list(net.graph.pairs())
    if torch.device(device).type == "cuda":
        return amp_dtype(amp) is not None and sum(module.prefers_channels_last for _, module in pairs) >= 2
    if torch.device(device).type != "cpu" or amp_dtype(amp) is not None:
        return False
    if any(lay.type not in CHANNELS_LAST_CPU_TYPES for lay, _ in pairs):
        return False
    convs = [module for lay, module in pairs if lay.type == "Convolution"]
    if any(getattr(module, "group", 1) != 1 for module in convs):
        return False
    return sum(len(module.blobs) > 0 and module.blobs[0].dim() == 4 for module in convs) >= 2


def use_channels_last(net) -> int:
    """Store the weights of the layers that prefer it (4-axis convolutions) channels_last;
    returns how many changed.

    Activations follow the layout of the convolution weights and inputs; pycaffe's ``.data``
    views still read and write the right elements (numpy follows the strides).
    """
    return net.graph.to_channels_last()


# Where the CPU rule keeps a convolution NCHW (torch 2.13's oneDNN, measured in training):
# on few output channels NHWC batch norm, ReLU and their backward lose more than the NHWC
# convolution gains (96x12x24x24: batch norm forward+backward 5.4 vs 2.7 ms), and on maps of
# 4x4 or less NHWC convolutions are slower (32x512x4x4, 3x3: 22 vs 14 ms forward, 45 vs
# 35 ms backward) and reorder their weights at every call.
CPU_CHANNELS_LAST_MIN_OUTPUTS = 16
CPU_CHANNELS_LAST_MIN_MAP = 17  # output height * width


class _Relayout(torch.autograd.Function):
    """x in ``layout``; its gradient goes back in x's own layout (the layers before it would
    otherwise mix layouts in their backward, a slow path)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layout: torch.memory_format, back: torch.memory_format) -> torch.Tensor:
        ctx.back = back
        return x.contiguous(memory_format=layout)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.contiguous(memory_format=ctx.back), None, None


def _layout_of(x: torch.Tensor) -> torch.memory_format:
    """The layout a gradient for ``x`` goes back in: x's own (NHWC storage or NCHW)."""
    return torch.channels_last if stored_nhwc(x) else torch.contiguous_format


class LayoutEntry(Delegating):
    """A convolution run in one layout (``channels_last`` or NCHW, as its weights are stored)
    whatever its 4-axis bottoms' layout: a bottom in the other layout enters through
    :class:`_Relayout`. An NCHW bottom without gradient enters a channels_last convolution as it
    is (oneDNN's own reorder is as fast)."""

    def __init__(self, original, channels_last: bool):
        super().__init__(original)
        self.channels_last = channels_last
        self.layout = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, *bottoms: torch.Tensor) -> list[torch.Tensor]:
        return self.original(*(self._enter(x) for x in bottoms))

    def writable_top(self) -> bool:
        return self.original.writable_top()

    def _enter(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.is_contiguous(memory_format=self.layout):
            return x
        if not x.requires_grad:
            return x if self.channels_last else x.contiguous()
        return _Relayout.apply(x, self.layout, _layout_of(x))


class _ActivationInto(torch.autograd.Function):
    """A (leaky) ReLU of ``x`` written in ``layout``: one pass reading x and writing the
    activation into a tensor of that layout. Its backward brings the gradient back to x's
    layout (a copy: torch's transposing copy beats an elementwise op across layouts) and
    applies the derivative there in place, from x's sign (Caffe's ReLU backward reads its bottom)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: float, layout: torch.memory_format,
                back: torch.memory_format) -> torch.Tensor:
        y = torch.empty_like(x, memory_format=layout)
        if slope == 0.0:
            torch.clamp_min(x, 0.0, out=y)  # torch's relu is this clamp
        else:
            torch._C._nn.leaky_relu(x, slope, out=y)
        ctx.save_for_backward(x)
        ctx.slope, ctx.back = slope, back
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        g = grad.contiguous(memory_format=ctx.back)
        out = g if g is not grad else None  # a new tensor may take the result in place
        if ctx.slope == 0.0:
            g = (torch.ops.aten.threshold_backward(g, x, 0) if out is None else
                 torch.ops.aten.threshold_backward.grad_input(g, x, 0, grad_input=out))
        else:
            g = (torch.ops.aten.leaky_relu_backward(g, x, ctx.slope, False) if out is None else
                 torch.ops.aten.leaky_relu_backward.grad_input(g, x, ctx.slope, False, grad_input=out))
        return g, None, None, None


class ActivationInto(Delegating):
    """A (leaky) ReLU whose one reader takes its top in ``layout`` (a :class:`LayoutEntry`, or an
    InnerProduct flattening NCHW): the activation writes its top in that layout itself when
    its bottom is in the other one, so the reader's copy and the activation's pass are one,
    and so are their backward passes (:class:`_ActivationInto`). Otherwise, and without
    autograd, it is the activation as it was."""

    def __init__(self, original: torch.nn.Module, layout: torch.memory_format):
        super().__init__(original)
        self.layout = layout

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or not x.requires_grad or x.is_contiguous(memory_format=self.layout):
            return self.original(x)
        return [_ActivationInto.apply(x, self.original.fused_activation(), self.layout, _layout_of(x))]

    def alone(self) -> torch.nn.Module:
        return self.original.alone() if isinstance(self.original, Delegating) else self.original


def _activations_into_readers(graph) -> int:
    """Wrap each (leaky) ReLU whose top's one reader wants a layout in :class:`ActivationInto`."""
    from .net.fold import InPlaceActivation, value_readers

    _, readers = value_readers(graph.plan)
    count = 0
    for i, (lay, module) in enumerate(list(graph.pairs())):
        if isinstance(module, Delegating) and not isinstance(module, InPlaceActivation):
            continue
        if module.fused_activation() is None or len(lay.tops) != 1:
            continue
        nxt = readers.get((lay.tops[0], i), [])
        if len(nxt) != 1:
            continue
        reader, reader_lay = graph.module(nxt[0]), graph.plan.layers[nxt[0]]
        if isinstance(reader, LayoutEntry):
            layout = reader.layout
        elif (reader_lay.type == "InnerProduct" and len(reader.bottom_shapes[0]) == 4
              and reader.param.inner_product_param.axis in (1, -3)):  # flattens C, H, W
            layout = torch.contiguous_format
        else:
            continue
        graph.replace_module(i, ActivationInto(module, layout))
        count += 1
    return count


def use_channels_last_cpu(net, min_outputs: int = CPU_CHANNELS_LAST_MIN_OUTPUTS,
                          min_map: int = CPU_CHANNELS_LAST_MIN_MAP) -> int:
    """The CPU training layout: convolutions of at least ``min_outputs`` outputs on output
    maps of at least ``min_map`` values store their weights channels_last (their tops and the
    layers after them follow), the others stay NCHW; each runs behind a :class:`LayoutEntry`
    that brings its bottom to its own layout, and a (leaky) ReLU before one writes its top in
    that layout (:class:`ActivationInto`). Returns how many went channels_last."""
    changed = 0
    for index, (lay, module) in enumerate(list(net.graph.pairs())):
        if lay.type != "Convolution" or isinstance(module, Delegating) or not len(module.blobs):
            continue
        out = module.top_shapes(module.bottom_shapes)[0]
        nhwc = (len(out) == 4 and module.num_output >= min_outputs and out[2] * out[3] >= min_map
                and module.to_channels_last())
        net.graph.replace_module(index, LayoutEntry(module, bool(nhwc)))
        changed += bool(nhwc)
    _activations_into_readers(net.graph)
    return changed


def channels_last_inputs(inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """4-axis inputs in channels_last layout (others unchanged)."""
    return {k: (v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v)
            for k, v in inputs.items()}


# -- fp16 loss scaling ---------------------------------------------------------------------------
class LossScaler:
    """Dynamic loss scaling for fp16: grow after ``growth_interval`` clean steps, halve on overflow."""

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True):
        self.scale = float(init_scale) if enabled else 1.0
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval = growth_interval
        self.enabled = enabled
        self._clean = 0

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to call ``backward`` on."""
        return loss * self.scale if self.enabled else loss

    @torch.no_grad()
    def unscale(self, params: list[torch.Tensor]) -> bool:
        """Divide the gradients by the scale in place; False (and a smaller scale) on inf/NaN."""
        grads = [p.grad for p in params if p.grad is not None]
        if not self.enabled or not grads:
            return True
        torch._foreach_mul_(grads, 1.0 / self.scale)
        finite = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        if not finite:
            self.scale *= self.backoff_factor
            self._clean = 0
            return False
        self._clean += 1
        if self._clean >= self.growth_interval:
            self.scale *= self.growth_factor
            self._clean = 0
        return True


def make_loss_scaler(device: torch.device | str, amp: str | None) -> LossScaler:
    """A scaler that works only for fp16 on CUDA (bf16 and fp32 have fp32's exponent range)."""
    enabled = amp_dtype(amp) == torch.float16 and torch.device(device).type == "cuda"
    return LossScaler(enabled=enabled)


@contextlib.contextmanager
def inference(net, amp: str | None = None) -> Iterator[None]:
    """No autograd, optional autocast: the context for deploy forwards (``classify``, ``time``)."""
    with torch.inference_mode(), autocast(net.device, amp):
        yield


# -- ONNX Runtime inference engine (``-engine onnxruntime``) -------------------------------------
class NetOutputs(torch.nn.Module):
    """``net.run`` as a module from positional input tensors to the named output tensors (for
    ONNX export: ``caffelike export`` and the ONNX Runtime engine)."""

    def __init__(self, net, inputs: Sequence[str], outputs: Sequence[str]):
        super().__init__()
        self.net = net
        self.input_names, self.output_names = list(inputs), list(outputs)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        blobs = self.net.run(dict(zip(self.input_names, xs)))
        return tuple(blobs[name] for name in self.output_names)


class OnnxRuntimeEngine:
    """A TEST net exported to ONNX (at its current input shapes) and run by ONNX Runtime.

    For deploy inference only (outputs equal the torch path within float tolerance). Export
    once; ``run(**inputs)`` takes and returns numpy arrays keyed by blob name. Weights are
    those of the net at construction time.
    """

    def __init__(self, net, threads: int | None = None, opset: int = 17):
        import io

        import numpy as np
        import onnxruntime as ort

        self.inputs, self.outputs = list(net.inputs), list(net.outputs)
        examples = tuple(torch.from_numpy(np.ascontiguousarray(net.blobs[n].data)) for n in self.inputs)
        buffer = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python-level shape checks
            net.run(dict(zip(self.inputs, examples)))  # folded weights (optimize_net) become constants
            torch.onnx.export(NetOutputs(net, self.inputs, self.outputs), examples, buffer,
                              input_names=self.inputs, output_names=self.outputs,
                              opset_version=opset, dynamo=False)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def run(self, **inputs: Any) -> dict[str, Any]:
        """Outputs (numpy) for these inputs (numpy, float32, the exported shapes)."""
        import numpy as np

        feed = {n: np.ascontiguousarray(inputs[n], dtype=np.float32) for n in self.inputs}
        return dict(zip(self.outputs, self.session.run(self.outputs, feed)))
