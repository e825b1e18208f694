"""``caffelike time``: per-layer forward/backward times in Caffe's log format (caffe.cpp time()).

Forward time per layer is measured around each layer module's call. Backward time per layer
is the span from the moment the gradient of its first top is ready to the next gradient
event of the backward pass (autograd runs the graph, not the layers one by one, so this is
an attribution, not Caffe's per-layer Backward call). On CUDA every mark synchronises.
"""
from __future__ import annotations

import time

import torch

from ..glog import get_logger

log = get_logger("solver")


def _mark(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def benchmark(net, iterations: int, device: torch.device, amp: str | None = None) -> None:
    """Run Caffe's ``time`` benchmark on ``net`` and log its lines (forwards under ``-amp``)."""
    from ..accel import autocast

    names = [lay.name for lay in net.plan.layers]
    modules = [m for _, m in net.graph.pairs()]
    n = len(modules)
    fwd = [0.0] * n
    bwd = [0.0] * n
    starts: dict[int, float] = {}
    events: list[tuple[float, int]] = []

    def pre_hook(i):
        def hook(module, inputs):
            starts[i] = _mark(device)
        return hook

    def post_hook(i):
        def hook(module, inputs, outputs):
            fwd[i] += _mark(device) - starts.pop(i, _mark(device))
            tops = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            for t in tops:
                if isinstance(t, torch.Tensor) and t.requires_grad:
                    t.register_hook(lambda g, i=i: events.append((_mark(device), i)))
                    break
        return hook

    log.info("Performing Forward")
    with autocast(device, amp):
        blobs = net.run()
        loss = net.objective(blobs).float()
    log.info("Initial loss: %g", float(loss.item()))
    log.info("Performing Backward")
    if loss.requires_grad:
        loss.backward()
    handles = []
    for i, m in enumerate(modules):
        handles.append(m.register_forward_pre_hook(pre_hook(i)))
        handles.append(m.register_forward_hook(post_hook(i)))
    log.info("*** Benchmark begins ***")
    log.info("Testing for %d iterations.", iterations)
    total_start = _mark(device)
    forward_time = backward_time = 0.0
    try:
        for j in range(iterations):
            it_start = _mark(device)
            with autocast(device, amp):
                blobs = net.run()
                loss = net.objective(blobs).float()
            forward_time += _mark(device) - it_start
            events.clear()
            b_start = _mark(device)
            if loss.requires_grad:
                loss.backward()
            b_end = _mark(device)
            backward_time += b_end - b_start
            ordered = sorted(events)
            for k, (t, i) in enumerate(ordered):
                nxt = ordered[k + 1][0] if k + 1 < len(ordered) else b_end
                bwd[i] += nxt - t
            log.info("Iteration: %d forward-backward time: %g ms.", j + 1,
                     (_mark(device) - it_start) * 1000)
    finally:
        for h in handles:
            h.remove()
    iters = max(1, iterations)
    log.info("Average time per layer: ")
    for i, name in enumerate(names):
        log.info("%10s\tforward: %g ms.", name, fwd[i] * 1000 / iters)
        log.info("%10s\tbackward: %g ms.", name, bwd[i] * 1000 / iters)
    total = (_mark(device) - total_start) * 1000
    log.info("Average Forward pass: %g ms.", forward_time * 1000 / iters)
    log.info("Average Backward pass: %g ms.", backward_time * 1000 / iters)
    log.info("Average Forward-Backward: %g ms.", total / iters)
    log.info("Total Time: %g ms.", total)
    log.info("*** Benchmark ends ***")
