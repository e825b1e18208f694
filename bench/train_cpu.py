"""Training step CPU time: caffelike's ``Solver.step(1)`` vs the hand-written step, alternating.

    python bench/train_cpu.py [NET ...] [--threads 1] [--rounds 15] [--variant default,channels_last=False]

For before/after comparisons on a shared machine: each time is the process CPU time
(``time.process_time``, which other processes' load barely moves) of ``repeat`` iterations,
and each variant (solver keyword arguments, ``name=value`` joined by ``+``) is alternated with
the hand-written step (bench/baselines.py) for ``rounds`` rounds; medians are compared.
Prints one line per net and variant: CPU ms per step, hand-written ms, speed ratio, and the
wall-clock ratio of the same rounds.
"""
from __future__ import annotations

import argparse
import ast
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch  # noqa: E402

import baselines  # noqa: E402
from harness import make_solver, train_data  # noqa: E402


def _options(variant: str) -> dict:
    """``a=1+b=False`` -> {"a": 1, "b": False}; ``default`` -> {}."""
    if variant == "default":
        return {}
    return {k: ast.literal_eval(v) for k, v in (item.split("=", 1) for item in variant.split("+"))}


def _times(fn, repeat: int) -> tuple[float, float]:
    c, w = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.process_time() - c) / repeat, (time.perf_counter() - w) / repeat


def measure(name: str, variants: list[str], rounds: int) -> list[str]:
    data, label = train_data(name)
    hand = baselines.make_step(name, data, label)
    repeat = 1 if name == "resnet18" else 5
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        solvers = []
        for variant in variants:
            solver = make_solver(name, pathlib.Path(tmp), **_options(variant))
            solver.net.blobs["data"].data[...] = data.numpy()
            solver.net.blobs["label"].data[...] = label.numpy()
            solvers.append(solver)
        fns = [(lambda s=s: s.step(1)) for s in solvers] + [hand]
        for fn in fns:  # warm-up
            fn()
            fn()
        cpu: list[list[float]] = [[] for _ in fns]
        wall: list[list[float]] = [[] for _ in fns]
        for r in range(rounds):
            order = list(range(len(fns)))
            if r % 2:
                order.reverse()
            for i in order:
                c, w = _times(fns[i], repeat)
                cpu[i].append(c)
                wall[i].append(w)
        hc, hw = statistics.median(cpu[-1]), statistics.median(wall[-1])
        for variant, c_list, w_list in zip(variants, cpu, wall):
            c, w = statistics.median(c_list), statistics.median(w_list)
            lines.append(f"{name:14s} {variant:28s} cpu {c * 1e3:8.2f} ms  hand {hc * 1e3:8.2f} ms  "
                         f"ratio {hc / c:.3f}   wall ratio {hw / w:.3f}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("nets", nargs="*", default=["simpleconv3", "lenet", "cifar10_quick", "resnet18"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--variant", default="default", help="comma-separated solver option sets")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import caffelike.glog

    caffelike.glog.get_logger().setLevel("WARNING")
    for name in args.nets:
        for line in measure(name, args.variant.split(","), args.rounds if name != "resnet18" else max(5, args.rounds // 3)):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
