"""Where a training iteration's time goes: caffelike's phases next to the hand-written baseline's.

    python bench/profile_step.py [simpleconv3|lenet|cifar10_quick|resnet18] [--rounds 7]
    python bench/profile_step.py --deep 10,50,200     # per-layer overhead of a deep thin net

Phases: forward (``net.run`` / ``model(x)``), loss (``net.objective`` / cross-entropy),
backward, update (``Solver.apply_update`` / the hand-written Caffe SGD), and the rest of
``Solver.step`` (clearing diffs, smoothing the loss, callbacks). Medians over alternating
rounds, in milliseconds.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import baselines  # noqa: E402
import nets  # noqa: E402
from harness import depth_times, make_solver, train_data  # noqa: E402


def _clock() -> float:
    return time.perf_counter()


def caffelike_phases(solver, inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """One iteration split into phases (same calls as Solver.step with iter_size 1)."""
    net = solver.net
    t0 = _clock()
    for info in net.learnable_params:
        info.tensor.grad = None
    t1 = _clock()
    blobs = net.run(inputs)
    t2 = _clock()
    objective = net.objective(blobs)
    t3 = _clock()
    objective.backward()
    float(objective.detach().item())
    t4 = _clock()
    solver.apply_update()
    t5 = _clock()
    return {"clear": t1 - t0, "forward": t2 - t1, "loss": t3 - t2, "backward": t4 - t3, "update": t5 - t4}


def hand_phases(model, opt, data: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    t0 = _clock()
    opt.zero_grad()
    t1 = _clock()
    out = model(data)
    t2 = _clock()
    loss = F.cross_entropy(out, target)
    t3 = _clock()
    loss.backward()
    float(loss.detach().item())
    t4 = _clock()
    opt.step()
    t5 = _clock()
    return {"clear": t1 - t0, "forward": t2 - t1, "loss": t3 - t2, "backward": t4 - t3, "update": t5 - t4}


def profile_net(name: str, rounds: int) -> str:
    data, label = train_data(name)
    with tempfile.TemporaryDirectory() as tmp:
        solver = make_solver(name, pathlib.Path(tmp))
        inputs = {"data": data, "label": label}
        model = baselines.MODELS[name]()
        opt = baselines.CaffeSGD(list(model.parameters()), lr=0.001, momentum=0.9, weight_decay=5e-4)
        target = label.long()
        ours: list[dict[str, float]] = []
        hand: list[dict[str, float]] = []
        for r in range(rounds + 2):
            a = caffelike_phases(solver, inputs)
            b = hand_phases(model, opt, data, target)
            if r >= 2:  # warm-up excluded
                ours.append(a)
                hand.append(b)
        step_times = []
        for _ in range(rounds):
            t = _clock()
            solver.step(1)
            step_times.append(_clock() - t)
    lines = [f"## {name} (batch {nets.TRAIN_SHAPES[name][0]}), median ms over {rounds} rounds",
             "| phase | caffelike | hand-written | difference |", "|---|---|---|---|"]
    for phase in ours[0]:
        a = statistics.median(x[phase] for x in ours) * 1e3
        b = statistics.median(x[phase] for x in hand) * 1e3
        lines.append(f"| {phase} | {a:.2f} | {b:.2f} | {a - b:+.2f} |")
    total_a = statistics.median(sum(x.values()) for x in ours) * 1e3
    total_b = statistics.median(sum(x.values()) for x in hand) * 1e3
    lines.append(f"| sum | {total_a:.2f} | {total_b:.2f} | {total_a - total_b:+.2f} |")
    lines.append(f"| Solver.step(1) | {statistics.median(step_times) * 1e3:.2f} | | |")
    return "\n".join(lines)


def profile_depth(depths: list[int], rounds: int) -> str:
    lines = ["## deep thin net: time per training iteration vs depth (1x1 conv + ReLU pairs, batch 4, 8x8x8)",
             "| conv+ReLU pairs | layers | caffelike ms | hand-written ms | difference ms | difference per layer us |",
             "|---|---|---|---|---|---|"]
    for depth, a, b in depth_times(depths, rounds):
        layers = 2 * depth + 3
        lines.append(f"| {depth} | {layers} | {a * 1e3:.2f} | {b * 1e3:.2f} | {(a - b) * 1e3:+.2f} | "
                     f"{(a - b) * 1e6 / layers:+.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("nets", nargs="*", default=["simpleconv3", "lenet", "cifar10_quick"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--deep", help="comma-separated depths of the deep thin net, e.g. 10,50,200")
    args = parser.parse_args()
    import caffelike.glog

    caffelike.glog.get_logger().setLevel("WARNING")
    if args.deep:
        sys.stdout.write(profile_depth([int(d) for d in args.deep.split(",")], args.rounds) + "\n")
        return 0
    for name in args.nets:
        sys.stdout.write(profile_net(name, args.rounds) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
