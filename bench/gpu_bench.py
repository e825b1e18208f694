"""CUDA benchmarks: training (eager, AMP bf16/fp16, torch.compile) and deploy inference.

    python bench/gpu_bench.py [--quick] [--markdown OUT]

Training rows time caffelike's iteration (``Solver.step`` for fp32, ``Solver.train_step``
under AMP, the compiled ``net.run`` for compile) against the hand-written PyTorch model in the
same mode, alternately, on the same in-memory batch; ratio = hand-written time / caffelike
time (>= 0.97 is the target). Inference rows time ``optimize_net`` + ``net.run`` under
inference mode, fp32 / bf16 autocast / compiled, reported as images/s with the ratio to
caffelike fp32. Synchronises the GPU around every timed call. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import contextlib
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import baselines  # noqa: E402
import harness  # noqa: E402
import nets  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def alternate(fn_a, fn_b, rounds: int, repeat: int, warmup: int = 3) -> tuple[float, float]:
    """harness.alternate, synchronising the GPU around every timed call."""
    return harness.alternate(fn_a, fn_b, rounds, repeat, warmup=warmup, sync=_sync)


def _hand(name: str, data, label, amp: str | None, compiled: bool):
    from caffelike import accel

    model = baselines.MODELS[name]().to(data.device)
    opt = baselines.CaffeSGD(list(model.parameters()), lr=0.001, momentum=0.9, weight_decay=5e-4)
    target = label.long()
    forward = torch.compile(model) if compiled else model
    scaler = accel.make_loss_scaler(data.device, amp)

    def step() -> None:
        opt.zero_grad()
        with accel.autocast(data.device, amp):
            loss = F.cross_entropy(forward(data).float(), target)
        scaler.scaled(loss).backward()
        if scaler.unscale(opt.params):
            opt.step()

    return step


def bench_train(quick: bool, device: torch.device, names: list[str] | None = None,
                use_compile: bool = True) -> list[dict]:
    from caffelike import accel
    from caffelike.net.fold import fuse_batchnorm_scale

    rows = []
    modes = [("fp32", None, False), ("amp bf16", "bf16", False), ("amp fp16", "fp16", False),
             ("compile", None, True)]
    names = names or (["simpleconv3", "resnet18"] if quick else ["simpleconv3", "lenet", "cifar10_quick", "resnet18"])
    modes = [m for m in modes if use_compile or not m[2]]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            n, c, h, w = nets.TRAIN_SHAPES[name]
            gen = torch.Generator().manual_seed(0)
            data = torch.randn(n, c, h, w, generator=gen).to(device)
            label = torch.randint(0, 2 if name == "simpleconv3" else 10, (n,), generator=gen).float().to(device)
            inputs = {"data": data, "label": label}
            for mode, amp, compiled in modes:
                solver = harness.make_solver(name, pathlib.Path(tmp), solver_mode="GPU", device=device,
                                             nan_guard=False)
                fuse_batchnorm_scale(solver.net.graph)
                if compiled:
                    accel.compile_net(solver.net, install=True)
                scaler = accel.make_loss_scaler(device, amp)

                def ours() -> None:
                    solver.train_step(inputs, amp=amp, scaler=scaler if scaler.enabled else None)

                hand = _hand(name, data, label, amp, compiled)
                t_ours, t_hand = alternate(ours, hand, 3 if quick else 5, 5 if quick else 10)
                param_mb = sum(p.tensor.numel() for p in solver.net.learnable_params if p.lr_mult) * 4 / 2 ** 20
                rows.append({"case": f"train {name} {mode}", "ours_ms": t_ours * 1e3, "base_ms": t_hand * 1e3,
                             "ratio": t_hand / t_ours, "target": ">= 0.97 (speed vs hand-written)",
                             "param_mb": param_mb})
    return rows


def bench_deploy(quick: bool, device: torch.device, names: list[str] | None = None,
                 use_compile: bool = True) -> list[dict]:
    import numpy as np

    import caffelike
    from caffelike import accel
    from caffelike.net.fold import optimize_net

    rows = []
    names = names or (["resnet50"] if quick else list(nets.DEPLOY_NETS))
    for name in names:
        net = caffelike.Net(str(nets.DEPLOY_NETS[name]), caffelike.TEST)
        harness.random_weights(net)
        in_name = net.inputs[0]
        _, c, h, w = net.blobs[in_name].data.shape
        batch = 16
        net.blobs[in_name].reshape(batch, c, h, w)
        net.reshape()
        net.to(device)
        optimize_net(net)
        x = torch.from_numpy(np.random.default_rng(1).standard_normal((batch, c, h, w)).astype(np.float32)).to(device)
        fp32_run = net.run
        compiled = accel.compile_net(net) if use_compile else None

        def runner(fn, amp):
            def call() -> None:
                with torch.inference_mode(), accel.autocast(device, amp):
                    fn({in_name: x})
            return call

        base = runner(fp32_run, None)
        for mode, fn, amp in (("optimize fp32", fp32_run, None), ("optimize bf16", fp32_run, "bf16"),
                              ("optimize fp16", fp32_run, "fp16"), ("optimize compile", compiled, None)):
            if fn is None or (device.type == "cpu" and amp == "fp16"):
                continue
            t_mode, t_base = alternate(runner(fn, amp), base, 3, 5 if quick else 10)
            rows.append({"case": f"deploy {name} b{batch} {mode}", "ours_ms": t_mode * 1e3, "base_ms": t_base * 1e3,
                         "ratio": t_base / t_mode, "target": f"{batch / t_mode:.0f} img/s (ratio = speed-up over fp32)"})
    return rows


def ddp_note(step_ms: float, param_mb: float) -> str:
    """Scaling on paper for one GPU: all-reduce time of the gradients vs the step time."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n >= 2:
        return f"{n} GPUs present: run `torchrun --nproc_per_node={n} -m caffelike train ...` for a measured DDP run"
    # ring all-reduce moves 2*(n-1)/n of the data; NVLink/NCCL bus bandwidth ~ 100+ GB/s on H100/H200 class parts
    bus_gbs = 100.0
    allreduce_ms = 2 * 0.5 * param_mb / 1024 / bus_gbs * 1e3
    eff = step_ms / (step_ms + max(0.0, allreduce_ms - 0.5 * step_ms))
    return (f"1 GPU: on paper, 2-GPU DDP all-reduces {param_mb:.1f} MB of gradients in ~{allreduce_ms:.2f} ms "
            f"at an assumed {bus_gbs:.0f} GB/s NCCL bus bandwidth, against a {step_ms:.1f} ms step: "
            f"~{eff * 100:.0f}% efficiency (overlap of half the step assumed)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script's logic")
    parser.add_argument("--train-nets", help="comma-separated subset of the training nets")
    parser.add_argument("--deploy-nets", help="comma-separated subset of the deploy nets")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.stderr.write("no CUDA device\n")
        return 2
    import caffelike.glog
    from caffelike import accel

    caffelike.glog.get_logger().setLevel("WARNING")
    accel.configure_backends(cudnn_benchmark=True, allow_tf32=False)
    device = torch.device(args.device)
    split = lambda v: v.split(",") if v else None  # noqa: E731
    rows = (bench_train(args.quick, device, split(args.train_nets), not args.no_compile)
            + bench_deploy(args.quick, device, split(args.deploy_nets), not args.no_compile))
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "none (CPU dry run)"
    lines = [f"GPU: {gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
             f"cuDNN {torch.backends.cudnn.version()}", "",
             "| case | caffelike ms | baseline ms | ratio | target |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['ours_ms']:.2f} | {r['base_ms']:.2f} | {r['ratio']:.3f} | {r['target']} |")
    r18 = [r for r in rows if r["case"] == "train resnet18 fp32"]
    if r18:
        lines += ["", ddp_note(r18[0]["ours_ms"], r18[0]["param_mb"])]
    text = "\n".join(lines)
    sys.stdout.write(text + "\n")
    if args.markdown:
        with contextlib.suppress(OSError):
            pathlib.Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
