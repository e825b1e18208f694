"""What the benchmark scripts share: alternating timers, caffelike solvers for the bench nets,
their in-memory data, random deploy weights, and the deep thin net's per-depth timing.

``run.py``, ``profile_step.py`` and ``gpu_bench.py`` import this module; it imports none of them.
"""
from __future__ import annotations

import pathlib
import statistics
import tempfile
import time
from typing import Callable

import numpy as np
import torch

import baselines
import nets


def timed(fn: Callable[[], object], repeat: int, sync: Callable[[], None] | None = None) -> float:
    """Seconds per call of ``fn`` over ``repeat`` calls; ``sync`` (e.g. a CUDA synchronise)
    runs before the clock starts and before it stops."""
    if sync is not None:
        sync()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    if sync is not None:
        sync()
    return (time.perf_counter() - start) / repeat


def alternate(fn_a: Callable[[], object], fn_b: Callable[[], object], rounds: int, repeat: int,
              warmup: int = 2, sync: Callable[[], None] | None = None) -> tuple[float, float]:
    """Median seconds per call of fn_a and fn_b, measured alternately (the order flips each round)."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    a_times: list[float] = []
    b_times: list[float] = []
    for r in range(rounds):
        pair = ((fn_a, a_times), (fn_b, b_times))
        for fn, sink in (pair if r % 2 == 0 else pair[::-1]):
            sink.append(timed(fn, repeat, sync))
    return statistics.median(a_times), statistics.median(b_times)


def make_solver(name: str, workdir: pathlib.Path, net_text: str | None = None,
                solver_mode: str = "CPU", **solver_kwargs):
    """caffelike's solver (nets.SOLVER) for bench net ``name``, or for ``net_text`` when given;
    the prototxts are written into ``workdir``."""
    import caffelike

    net_path = workdir / f"{name}.prototxt"
    net_path.write_text(net_text if net_text is not None else nets.TRAIN_NETS[name]())
    solver_path = workdir / f"{name}_solver.prototxt"
    solver_path.write_text(nets.SOLVER.format(net=net_path).replace("solver_mode: CPU",
                                                                    f"solver_mode: {solver_mode}"))
    return caffelike.get_solver(str(solver_path), **solver_kwargs)


def train_data(name: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded in-memory batch (data, float labels) of the shape nets.TRAIN_SHAPES gives ``name``."""
    n, c, h, w = nets.TRAIN_SHAPES[name]
    gen = torch.Generator().manual_seed(seed)
    data = torch.randn(n, c, h, w, generator=gen) * (60.0 if name == "lenet" else 1.0)
    classes = 2 if name == "simpleconv3" else 10
    label = torch.randint(0, classes, (n,), generator=gen).float()
    return data, label


def random_weights(net) -> None:
    """He-scaled random weights for a deploy net, with BatchNorm statistics that keep it stable."""
    gen = np.random.default_rng(0)
    for blobs in net.params.values():
        for blob in blobs:
            fan_in = max(1, int(np.prod(blob.data.shape[1:]))) if blob.data.ndim > 1 else 1
            if blob.data.ndim > 1:
                blob.data[...] = gen.standard_normal(blob.data.shape) * np.sqrt(2.0 / fan_in)
            else:
                blob.data[...] = 0.1 * gen.standard_normal(blob.data.shape)
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type == "BatchNorm":
            blobs = net.params[name]
            blobs[1].data[...] = np.abs(blobs[1].data) + 0.5
            blobs[2].data[...] = 1.0


def depth_times(depths: list[int], rounds: int) -> list[tuple[int, float, float]]:
    """(depth, caffelike s/iter, hand-written s/iter) of the deep thin net per depth, medians
    of alternating rounds."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for depth in depths:
            solver = make_solver(f"deep{depth}", pathlib.Path(tmp), nets.deep_thin(depth))
            gen = torch.Generator().manual_seed(0)
            data = torch.randn(4, 8, 8, 8, generator=gen)
            label = torch.randint(0, 10, (4,), generator=gen).float()
            solver.net.blobs["data"].data[...] = data.numpy()
            solver.net.blobs["label"].data[...] = label.numpy()
            hand = baselines.make_model_step(baselines.DeepThin(depth), data, label)
            a, b = alternate(lambda: solver.step(1), hand, rounds, 1)
            out.append((depth, a, b))
    return out
