"""Fast paths that leave results within float tolerance: torch.compile, AMP, channels_last,
cuDNN settings and the ONNX Runtime engine.

* :func:`compile_net` wraps ``net.run`` in ``torch.compile`` (``-compile`` / ``compile=True``);
  with ``install=True`` the net's own ``run`` is replaced, so the solver and tools pick it up
  without knowing.
* :func:`autocast` is the ``-amp bf16|fp16`` context (a no-op without AMP); :class:`LossScaler`
  is dynamic loss scaling for fp16 (Caffe's update rules need unscaled diffs, so the scaler
  divides them back before the update and skips a step whose gradients overflowed). The
  Solver uses both in its own iterations; :func:`amp_train_step` runs one such iteration
  outside the solver's loop (for benchmarks), and :func:`inference` is the no-autograd,
  optional-autocast context of deploy forwards.
* :func:`use_channels_last` puts 4-axis convolution weights in channels_last layout, which
  helps convolutions on CUDA under AMP (tensor cores; :func:`channels_last_auto` says when)
  and oneDNN on the CPU (the deploy folding asks for it).
* :func:`configure_backends` sets cuDNN autotuning (and keeps TF32 off unless asked, since
  goldens are float32).
* :class:`OnnxRuntimeEngine` (``-engine onnxruntime``) exports a TEST net to ONNX through
  :class:`NetOutputs` and runs it with ONNX Runtime.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from .errors import CaffelikeError
from .log import get_logger

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
    """``torch.compile`` of ``net.run``; with ``install`` the net's ``run`` becomes the compiled one.

    Pass every Input blob in ``inputs`` (reading the pycaffe blobs inside the compiled region
    costs a graph break). Parameters are read at call time, so loaded weights are seen.
    """
    eager = net.__dict__.get("_eager_run") or net.run
    compiled = torch.compile(eager, mode=mode, backend=backend, dynamic=dynamic)
    if install:
        object.__setattr__(net, "_eager_run", eager)
        object.__setattr__(net, "run", compiled)
    return compiled


def uncompile_net(net) -> None:
    """Undo ``compile_net(..., install=True)``."""
    if "_eager_run" in net.__dict__:
        del net.__dict__["run"]
        del net.__dict__["_eager_run"]


# -- channels_last ------------------------------------------------------------------------------
def channels_last_auto(net, device: torch.device | str, amp: str | None) -> bool:
    """channels_last pays on CUDA with AMP for nets made mostly of 2-D convolutions."""
    if torch.device(device).type != "cuda" or amp_dtype(amp) is None:
        return False
    kinds = [lay.type for lay in net.plan.layers]
    return kinds.count("Convolution") >= 2


def use_channels_last(net) -> int:
    """Store every 4-axis Convolution weight channels_last; returns how many were converted.

    Activations follow the layout of the convolution weights and inputs; pycaffe's ``.data``
    views still read and write the right elements (numpy follows the strides).
    """
    done = 0
    for lay, module in zip(net.plan.layers, net.layer_modules):
        if lay.type != "Convolution" or not len(module.blobs):
            continue
        weight = module.blobs[0]
        if weight.dim() == 4:
            weight.data = weight.data.contiguous(memory_format=torch.channels_last)
            done += 1
    return done


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


def amp_train_step(solver, amp: str | None, scaler: LossScaler | None = None,
                   inputs: Mapping[str, torch.Tensor] | None = None) -> float:
    """One training iteration (iter_size 1) of ``solver`` with the forward under ``amp`` and the
    backward of the ``scaler``-scaled loss: the solver's own pass and update, outside its loop.

    Gradients are unscaled before Caffe's update rule runs; a step whose gradients overflowed
    is skipped (the iteration still counts, as with torch.amp's GradScaler) and gives NaN.
    """
    scaler = scaler if scaler is not None else LossScaler(enabled=False)
    solver._clear_diffs()
    loss, _ = solver._forward_backward(inputs, amp=amp, scaler=scaler)
    if not solver._update_unless_overflow(scaler):
        return float("nan")
    return float(loss) if math.isfinite(loss) else float("nan")


@contextlib.contextmanager
def inference(net, amp: str | None = None) -> Iterator[None]:
    """No autograd, optional autocast: the context for deploy forwards (``classify``, ``time``)."""
    with torch.inference_mode(), autocast(net._device(), amp):
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
