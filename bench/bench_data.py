"""Images/s of the ImageData pipeline (0, 1, 2 workers) vs a Simpleconv3 training step.

    python bench/bench_data.py [--quick] [--json] [--batch 64] [--transform book|mobilenet|augment]

Pipeline: the book's mouth data (data/mouth/train.txt, shuffled) through caffelike's
ImageData layer with the book's transform settings; the consumer is the book's Simpleconv3
(3 x conv3x3/2 + BN + ReLU, ip 128, ip 2) trained with plain torch SGD on 48x48 batches, on
the GPU when there is one. A pipeline keeps up when its images/s >= the step's images/s.
A second row per worker count times training steps fed by the layer (the model never waits
when that is as fast as the step alone). Worker start-up is excluded (warm-up batches). ``--json`` prints, as the last line, the
rows that bench/run.py tabulates (``ours_s`` = pipeline img/s, ``base_s`` = step img/s).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import torch
from google.protobuf import text_format
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parents[1]
MOUTH = ROOT / "data" / "mouth"

TRANSFORMS = {
    "book": "crop_size: 48 mirror: true mean_value: 104.008 mean_value: 116.669 mean_value: 122.675",
    "mobilenet": ("crop_size: 48 mirror: true min_side_min: 48 min_side_max: 60 "
                  "mean_value: 104.008 mean_value: 116.669 mean_value: 122.675"),
    "augment": ("crop_size: 48 mirror: true min_side_min: 48 min_side_max: 60 max_rotation_angle: 15 "
                "use_deformed_resize: true mean_value: 104.008 mean_value: 116.669 mean_value: 122.675"),
}


def simpleconv3() -> nn.Module:
    """The book's Simpleconv3 in plain torch."""
    layers: list[nn.Module] = []
    channels = 3
    for out in (12, 24, 48):
        layers += [nn.Conv2d(channels, out, 3, 2), nn.BatchNorm2d(out), nn.ReLU()]
        channels = out
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(48 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, 2))


def step_rate(batch: int, steps: int, device: torch.device, layer=None) -> float:
    """Images/s a training step consumes: on a fixed batch already on the device, or (with
    ``layer``) on the batches the data layer delivers, one forward() per step."""
    model = simpleconv3().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 48, 48, device=device)
    y = torch.randint(0, 2, (batch,), device=device)

    def one() -> None:
        data, label = (x, y) if layer is None else layer.forward()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(data), label.long()).backward()
        opt.step()

    for _ in range(3):
        one()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        one()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def image_data(batch: int, workers: int, transform: str, device: torch.device):
    """The ImageData layer on the mouth training list, with the given transform settings."""
    from caffelike.layers.data import ImageData
    from caffelike.proto import caffe_pb2

    param = text_format.Parse(
        f'name: "data" type: "ImageData" top: "data" top: "label" '
        f'image_data_param {{ source: "train.txt" batch_size: {batch} shuffle: true }} '
        f'transform_param {{ {TRANSFORMS[transform]} }}', caffe_pb2.LayerParameter())
    layer = ImageData(param, [], caffe_pb2.TRAIN).to(device)
    layer.set_seed(0)
    layer.set_num_workers(workers)
    return layer


def fed_step_rate(batch: int, steps: int, workers: int, transform: str, device: torch.device) -> float:
    """Images/s of training steps fed by the ImageData layer (the model waits when < step)."""
    layer = image_data(batch, workers, transform, device)
    try:
        return step_rate(batch, steps, device, layer)
    finally:
        layer.close()


def pipeline_rate(batch: int, batches: int, workers: int, transform: str,
                  device: torch.device) -> float:
    """Images/s the ImageData layer delivers (on ``device``) with ``workers`` workers."""
    layer = image_data(batch, workers, transform, device)
    try:
        for _ in range(2):
            layer.forward()
        _sync(device)
        start = time.perf_counter()
        for _ in range(batches):
            layer.forward()
        _sync(device)
        return batch * batches / (time.perf_counter() - start)
    finally:
        layer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches")
    parser.add_argument("--json", action="store_true", help="last line: JSON rows for bench/run.py")
    parser.add_argument("--batch", type=int, default=64, help="the book's TRAIN batch (64)")
    parser.add_argument("--transform", choices=sorted(TRANSFORMS), default="book")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    import caffelike.glog

    caffelike.glog.get_logger().setLevel("WARNING")
    os.chdir(MOUTH)
    device = torch.device(args.device)
    batches = 10 if args.quick else 40
    consume = step_rate(args.batch, batches, device)
    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        rate = pipeline_rate(args.batch, batches, workers, args.transform, device)
        target = workers == 2  # the target: >= 2x the step's consumption with 2 workers
        rows.append({"bench": "data", "case": f"ImageData {args.transform}, {workers} workers ({device.type})",
                     "ours_s": rate, "base_s": consume, "ratio": rate / consume,
                     "target": ">= 2.0 (pipeline vs consumption)" if target else "none (reference)",
                     "ok": rate >= 2 * consume if target else None})
        fed = fed_step_rate(args.batch, batches, workers, args.transform, device)
        rows.append({"bench": "data", "case": f"train step fed by it, {workers} workers ({device.type})",
                     "ours_s": fed, "base_s": consume, "ratio": fed / consume,
                     "target": ">= 0.95 (model never waits)" if device.type == "cuda"
                     else "none (workers and step share the CPU cores)",
                     "ok": fed >= 0.95 * consume if device.type == "cuda" else None})
    lines = [f"{r['case']}: {r['ours_s']:.0f} img/s vs step {r['base_s']:.0f} img/s "
             f"(x{r['ratio']:.2f})" for r in rows]
    sys.stderr.write("\n".join(lines) + "\n")
    if args.json:
        sys.stdout.write(json.dumps(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
