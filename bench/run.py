"""caffelike benchmarks: ratios against baselines measured in the same run.

    python bench/run.py [--quick] [--only train,deploy,data,memory] [--markdown OUT]

* train:  iterations/s of caffelike's Solver.step vs a hand-written PyTorch module with a
          Caffe-equivalent SGD step, same net, batch and in-memory data (issue 17: >= 1.0x);
* deploy: pycaffe ``Net.forward`` latency, batch 1 and 16, vs OpenCV dnn's Caffe importer on
          SqueezeNet 1.1, GoogLeNet, ResNet-50 and MobileNet v1 (issue 17: the default path at
          least OpenCV's speed, ResNet-50 1.5x; ``optimize=True`` 1.5x on all four);
* data:   ImageData pipeline images/s with 0/1/2 workers vs the training step's consumption;
* memory: peak RSS of each training row's run vs the hand-written baseline, one child
          process each (issue 17: <= 1.1x).

Each pair is measured alternately (A, B, A, B, ...) and medians are compared, so a machine
that gets busier during the run affects both sides alike. Warm-up iterations are excluded.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import baselines  # noqa: E402
import nets  # noqa: E402
from harness import alternate, depth_times, make_solver, random_weights, train_data  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent


def bench_train(quick: bool) -> list[dict]:
    """Solver.step(1) vs the hand-written step; nets with BatchNorm also without the BN+Scale fusion."""
    rows = []
    names = ["simpleconv3", "lenet", "cifar10_quick"] + ([] if quick else ["resnet18"])
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            data, label = train_data(name)
            hand = baselines.make_step(name, data, label)
            repeat = 1 if name == "resnet18" else (3 if quick else 5)
            # a short step gets more rounds: its median then rests on a second or more of
            # alternation, not on 0.4 s (7 rounds of Simpleconv3 moved by +-2 % run to run)
            rounds = 3 if quick else (7 if name == "resnet18" else 21)
            for variant in ("default", "channels_last", "fuse=False"):
                options = {"default": {}, "channels_last": {"channels_last": True},
                           "fuse=False": {"fuse": False}}[variant]
                solver = make_solver(name, pathlib.Path(tmp), **options)
                if variant == "fuse=False" and not any(lay.type == "BatchNorm" for lay in solver.net.plan.layers):
                    break  # nothing to fuse: the default row says it all
                main = variant == "default"
                solver.net.blobs["data"].data[...] = data.numpy()
                solver.net.blobs["label"].data[...] = label.numpy()
                t_ours, t_hand = alternate(lambda: solver.step(1), hand, rounds, repeat)
                ratio = t_hand / t_ours
                rows.append({"bench": "train", "case": name + ("" if main else f" ({variant}, for reference)"),
                             "ours_s": t_ours, "base_s": t_hand, "ratio": ratio,
                             "target": f">= {TRAIN_TARGET:.2f} (speed vs hand-written)" if main else "none (reference)",
                             "ok": ratio >= TRAIN_TARGET if main else None})
                print(format_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


def bench_deploy(quick: bool) -> list[dict]:
    """Net.forward latency vs OpenCV dnn on the same prototxt and weights, plain and optimized."""
    import cv2

    import caffelike
    from caffelike.accel import OnnxRuntimeEngine

    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
        return [{"bench": "deploy", "case": "all", "note": f"OpenCV {cv2.__version__} has no Caffe importer"}]
    cv2.setNumThreads(torch.get_num_threads())  # same thread count on both sides
    rows = []
    batches = (1,) if quick else (1, 16)
    with tempfile.TemporaryDirectory() as tmp:
        for name, proto in nets.DEPLOY_NETS.items():
            if quick and name == "resnet50":
                continue
            net = caffelike.Net(str(proto), caffelike.TEST)
            random_weights(net)
            weights = os.path.join(tmp, f"{name}.caffemodel")
            net.save(weights)
            fast = caffelike.Net(str(proto), weights, caffelike.TEST, optimize=True)
            cv_net = cv2.dnn.readNetFromCaffe(str(proto), weights)
            cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            in_name = net.inputs[0]
            _, c, h, w = net.blobs[in_name].data.shape
            for batch in batches:
                x = np.random.default_rng(1).standard_normal((batch, c, h, w)).astype(np.float32)
                for model in (net, fast):
                    model.blobs[in_name].reshape(batch, c, h, w)
                    model.reshape()
                engine = None

                def theirs():
                    cv_net.setInput(x)
                    cv_net.forward()

                def onnxruntime():
                    return engine.run(**{in_name: x})

                variants = (("eager", lambda: net.forward(**{in_name: x})),
                            ("optimize", lambda: fast.forward(**{in_name: x})),
                            ("onnxruntime", onnxruntime))
                for variant, ours in variants:
                    if variant == "onnxruntime":
                        # built after the other rows: its ONNX export leaves this process's
                        # later pycaffe passes a few per cent slower (GoogLeNet b1 eager 0.78
                        # -> 0.84 of OpenCV), which is not part of the path those rows time
                        try:
                            engine = OnnxRuntimeEngine(fast, threads=torch.get_num_threads())
                        except Exception as exc:  # an op without an ONNX export: say so, keep benchmarking
                            rows.append({"bench": "deploy", "case": f"{name} b{batch} onnxruntime",
                                         "note": f"export failed: {type(exc).__name__}"})
                            continue
                    # batch 1: 15 rounds of 3 calls (5 rounds, 15 calls, moved SqueezeNet by +-8 %)
                    rounds = 3 if quick else (15 if batch == 1 else 5)
                    t_ours, t_cv = alternate(ours, theirs, rounds, 1 if batch > 1 else 3, warmup=2)
                    ratio = t_ours / t_cv
                    target = deploy_target(name, variant)
                    rows.append({"bench": "deploy", "case": f"{name} b{batch} {variant}",
                                 "ours_s": t_ours, "base_s": t_cv, "ratio": ratio,
                                 "target": (f"<= {target:.2f} (latency vs OpenCV dnn)" if target is not None
                                            else "none (reference)"),
                                 "ok": ratio <= target if target is not None else None})
                    print(format_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


def deploy_target(name: str, variant: str) -> float | None:
    """Issue 17's latency ratio target (ours / OpenCV) for a deploy row; None for a reference row.

    ``eager`` is the default pycaffe path (every blob readable): at least OpenCV's speed,
    ResNet-50 1.5x; ``optimize`` 1.5x on every net; ``onnxruntime`` (issue 8) OpenCV's speed.
    """
    if variant == "eager":
        return 1 / 1.5 if name == "resnet50" else 1.0
    if variant == "optimize":
        return 1 / 1.5
    return 1.0


TRAIN_TARGET = 1.0  # issue 17: Solver.step at least as fast as the hand-written step


def bench_memory(quick: bool) -> list[dict]:
    rows = []
    for name in ["simpleconv3", "lenet", "cifar10_quick"] + ([] if quick else ["resnet18"]):
        peaks = {}
        for which in ("ours", "hand"):
            out = subprocess.run([sys.executable, __file__, "--child-memory", name, which],
                                 capture_output=True, text=True, check=True)
            peaks[which] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]
        ratio = peaks["ours"] / peaks["hand"]
        rows.append({"bench": "memory", "case": name, "ours_s": peaks["ours"], "base_s": peaks["hand"],
                     "ratio": ratio, "target": "<= 1.10 (peak RSS MB vs hand-written)", "ok": ratio <= 1.10})
    return rows


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that across
    exec, so a child would report the benchmark parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_memory(name: str, which: str) -> None:
    """Peak RSS of 5 training iterations; both sides import the same modules first."""
    import caffelike  # noqa: F401  (so both children pay the same imports)
    from caffelike.net.fold import fuse_batchnorm_scale  # noqa: F401

    data, label = train_data(name)
    base = _peak_rss_mb()
    if which == "hand":
        step = baselines.make_step(name, data, label)
    else:
        tmp = tempfile.mkdtemp()
        solver = make_solver(name, pathlib.Path(tmp))
        solver.net.blobs["data"].data[...] = data.numpy()
        solver.net.blobs["label"].data[...] = label.numpy()

        def step():
            solver.step(1)
    for _ in range(5):
        step()
    peak = _peak_rss_mb()
    print(json.dumps({"peak_mb": peak, "after_imports_mb": base}))


def bench_data(quick: bool) -> list[dict]:
    script = HERE / "bench_data.py"
    if not script.exists():
        return [{"bench": "data", "case": "ImageData", "note": "bench_data.py missing"}]
    out = subprocess.run([sys.executable, str(script), "--json"] + (["--quick"] if quick else []),
                         capture_output=True, text=True)
    if out.returncode != 0:
        return [{"bench": "data", "case": "ImageData", "note": out.stderr.strip().splitlines()[-1:]}]
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_layers(quick: bool) -> list[dict]:
    """Per-layer overhead: Solver.step on deep thin nets of growing depth vs the same net by hand."""
    depths = (10, 50) if quick else (10, 50, 200)
    rows = []
    for depth, a, b in depth_times(list(depths), 5 if quick else 9):
        layers = 2 * depth + 3
        rows.append({"bench": "layers", "case": f"deep thin {depth} conv+ReLU ({layers} layers)",
                     "ours_s": a, "base_s": b, "ratio": b / a,
                     "target": f"overhead {(a - b) * 1e6 / layers:+.1f} us/layer (small constant)",
                     "ok": (a - b) * 1e6 / layers < 100})
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| bench | case | caffelike | baseline | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "note" in r:
            lines.append(f"| {r['bench']} | {r['case']} | | | | {r['note']} | |")
            continue
        unit = "MB" if r["bench"] == "memory" else ("img/s" if r["bench"] == "data" else "ms")
        scale = 1.0 if unit != "ms" else 1000.0
        lines.append(f"| {r['bench']} | {r['case']} | {r['ours_s'] * scale:.2f} {unit} | "
                     f"{r['base_s'] * scale:.2f} {unit} | {r['ratio']:.3f} | {r['target']} | "
                     f"{'-' if r['ok'] is None else 'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer nets and rounds")
    parser.add_argument("--only", default="train,layers,deploy,data,memory")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--child-memory", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(*args.child_memory)
        return 0
    import caffelike.glog

    caffelike.glog.get_logger().setLevel("WARNING")
    benches = {"train": bench_train, "deploy": bench_deploy, "data": bench_data, "memory": bench_memory,
               "layers": bench_layers}
    rows: list[dict] = []
    for key in args.only.split(","):
        print(f"== {key}", file=sys.stderr, flush=True)
        try:
            rows += benches[key](args.quick)
        except Exception as exc:  # one broken bench must not lose the others' rows
            rows.append({"bench": key, "case": "all", "note": f"failed: {type(exc).__name__}: {exc}"[:200]})
    table = format_table(rows)
    header = (f"machine: {os.cpu_count()} cores, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads), python {sys.version.split()[0]}")
    print(header)
    print(table)
    if args.markdown:
        pathlib.Path(args.markdown).write_text(header + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
