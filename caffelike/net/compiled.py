"""``optimize=True``'s whole CPU forward: the net compiled by Inductor, when that is faster.

The net is exported as a plain module (:func:`caffelike.export.to_torch`, a copy of its
weights) and compiled with ``torch.compile`` and frozen weights, which lets Inductor fold,
prepack and fuse across layers and run the pass without per-layer Python. It computes only the
net's outputs: a pycaffe script that reads another blob afterwards gets it from a
layer-by-layer pass over the same inputs, run once on that first read
(:class:`~caffelike.net.blobs.LastPass`), so every blob stays readable.

Whether it pays depends on the net (Inductor's own kernels against the packed layer-by-layer
pass, :mod:`.packed`): after compiling for an input shape, both run a few times and the faster
one serves that shape. The compiled module holds a snapshot of the weights, so it is rebuilt
when a parameter changes (the same signals as the packed convolutions: torch's version
counters, replaced tensors, numpy views handed out); while a script holds a numpy view of a
parameter, the layer-by-layer pass runs. Compiling takes seconds per input shape; a platform
where it fails (no C++ compiler, an op Inductor lacks) logs why once and keeps the
layer-by-layer pass. So does a key whose module meets a global torch setting it was not
compiled for (autocast, deterministic algorithms): frozen weights cannot be recompiled.
"""
from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Callable, Mapping

import torch

from ..blob import params_state
from ..glog import get_logger

if TYPE_CHECKING:  # pragma: no cover
    from .graph import NetGraph

log = get_logger("optimize")

_TRIALS = 5  # timed runs of each pass when choosing (alternating; the medians compare)
_RECOMPILES = 256  # nets x input shapes compiled in one process


class CompiledForward:
    """The compiled outputs-only pass of one net (see the module docstring)."""

    def __init__(self, graph: "NetGraph", export: Callable[[], torch.nn.Module],
                 inputs: list[str], outputs: list[str]):
        self._graph = graph
        self._export = export
        self._inputs = inputs
        self._outputs = outputs
        self._key: tuple | None = None
        self._module: Callable | None = None  # None: the layer-by-layer pass serves this key
        self._failed = False
        self._dicts: tuple[int, list | None] = (-1, None)

    def _blob_dicts(self) -> list | None:
        """The layers' parameter dicts (a replaced blob is replaced in them), per graph version."""
        if self._dicts[0] != self._graph.version:
            dicts = [getattr(module.blobs, "_parameters", None) for _, module in self._graph.pairs()]
            self._dicts = (self._graph.version, None if any(d is None for d in dicts) else dicts)
        return self._dicts[1]

    def _weights_key(self) -> tuple | None:
        """What the compiled weights depend on; None while a numpy view of a parameter lives
        (or for a layer whose blobs are not torch parameters, e.g. a Python layer's)."""
        dicts = self._blob_dicts()
        state = None if dicts is None else params_state(t for blobs in dicts for t in blobs.values())
        return None if state is None else (self._graph.version, state)

    def outputs(self, inputs: Mapping[str, torch.Tensor],
                layer_by_layer: Callable[[], object]) -> dict[str, torch.Tensor] | None:
        """The net's outputs for ``inputs`` from the compiled module, or None when the
        layer-by-layer pass (``layer_by_layer``, also used for the timing) is to run instead."""
        if self._failed or any(not t.is_cpu or t.dtype != torch.float32 for t in inputs.values()):
            return None
        weights = self._weights_key()
        if weights is None:
            return None
        key = (weights, tuple(tuple(inputs[name].shape) for name in self._inputs))
        args = [inputs[name] for name in self._inputs]
        if key != self._key:
            self._key = key
            self._module = None
            try:
                self._module = self._choose(args, layer_by_layer)
            except Exception as exc:  # noqa: BLE001 - any compiler failure keeps the plain pass
                self._failed = True
                log.warning("optimize: the compiled forward is unavailable here (%s: %s); "
                            "running layer by layer", type(exc).__name__, str(exc).splitlines()[0][:200])
                return None
        if self._module is None:
            return None
        # Dynamo's guards re-check every frozen weight on each call (0.3 ms on GoogLeNet). Each
        # compiled module here serves one key only (input shapes, CPU float32, no grad, the
        # weights it froze): only the guards telling this net's entry from others' are needed.
        try:
            with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                return self._module(*args)
        except RuntimeError as exc:
            if "skip_guard_eval_unsafe" not in str(exc):
                raise
            # A global torch setting the module was compiled without (autocast, deterministic
            # algorithms, ...) would need a recompile, which frozen weights rule out: the
            # layer-by-layer pass, which follows such settings, serves this key from now on.
            log.info("optimize: a global torch setting changed since compiling; running layer by layer")
            self._module = None
            return None

    @staticmethod
    def prefer_compiled(compiled_s: float, layer_by_layer_s: float) -> bool:
        """Whether the compiled pass serves, from the median of each pass's timed runs."""
        return compiled_s < layer_by_layer_s

    def _choose(self, args: list[torch.Tensor], layer_by_layer: Callable[[], object]) -> Callable | None:
        import torch._dynamo

        # every net's module shares TorchNet.forward's code, which Dynamo compiles at most
        # recompile_limit times (default 8) per process before it falls back to eager
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, _RECOMPILES)
        start = time.perf_counter()
        plain = self._export()
        with torch.no_grad():  # Inductor picks its own layouts; optimize's channels_last weights mislead it
            for param in plain.parameters():
                param.data = param.data.contiguous()
        import torch._inductor.config

        compiled = torch.compile(plain, dynamic=False)
        # compiles for this shape; freezing set in the config itself (as torch.compile's
        # options it does not reach the passes that prepack oneDNN weights); the C++ wrapper
        # calls the kernels without Python in between (SqueezeNet b1 about 5 % faster)
        with torch._inductor.config.patch(freezing=True, freezing_discard_parameters=True, cpp_wrapper=True):
            compiled(*args)
        seconds = time.perf_counter() - start

        def run_compiled() -> None:
            compiled(*args)

        times = {"compiled": [], "layer by layer": []}
        runs = (("compiled", run_compiled), ("layer by layer", layer_by_layer))
        for trial in range(_TRIALS):
            for name, fn in (runs if trial % 2 == 0 else runs[::-1]):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        best = {name: statistics.median(v) for name, v in times.items()}
        use = self.prefer_compiled(best["compiled"], best["layer by layer"])
        log.info("optimize: compiled the forward for inputs %s in %.1f s; %.2f ms compiled vs %.2f ms "
                 "layer by layer: %s", [tuple(a.shape) for a in args], seconds,
                 best["compiled"] * 1e3, best["layer by layer"] * 1e3,
                 "using the compiled one" if use else "keeping layer by layer")
        return compiled if use else None
