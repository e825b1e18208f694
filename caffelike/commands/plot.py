"""``caffelike plot LOG [LOG...] -o curves.png``: training curves of Caffe logs (see
:mod:`caffelike.logs.plot` for the panels and Caffe's chart types)."""
from __future__ import annotations

import os

from ..cli import FlagParser
from ..errors import CaffelikeError, DataError
from ..glog import setup_logging
from ..logs.plot import CHART_TYPES, DEFAULT_PANELS, PANELS, X_AXES, draw


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CaffelikeError(f"caffelike plot: --size must be WIDTHxHEIGHT in pixels, got '{text}'") from None
    if w < 50 or h < 50:
        raise CaffelikeError(f"caffelike plot: --size {text} is too small; at least 50x50 pixels expected")
    return w, h


def main(argv: list[str]) -> int:
    """``caffelike plot LOG [LOG...] -o curves.png [--x iters|seconds|lr] [--chart-type 0-7] ...``."""
    parser = FlagParser(prog="caffelike plot", description="Training curves from Caffe logs.")
    parser.add_argument("logs", nargs="+", help="training logs (Caffe's or caffelike's)")
    parser.add_argument("-o", "--output", default="curves.png", help="PNG/SVG/PDF file to write")
    parser.add_argument("--x", choices=sorted(X_AXES), default="iters", help="x axis (default iters)")
    parser.add_argument("--chart-type", "--chart_type", type=int, choices=sorted(CHART_TYPES),
                        help="one of Caffe's plot_training_log.py charts (0-7) instead of the panels")
    parser.add_argument("--panels", default=",".join(DEFAULT_PANELS),
                        help=f"comma-separated panels out of {', '.join(PANELS)}")
    parser.add_argument("--smooth", type=int, default=1, help="moving average window for train curves")
    parser.add_argument("--size", default=None, help="WIDTHxHEIGHT in pixels (default 400 px per panel x 400)")
    parser.add_argument("--dpi", type=int, default=100)
    parser.add_argument("--title", default=None)
    parser.add_argument("--log-y", "--log_y", action="store_true", help="logarithmic loss axis")
    args = parser.parse_args(argv)
    setup_logging()
    for log in args.logs:
        if not os.path.isfile(log):
            raise DataError(f"{log}: no such log file")
    if args.chart_type is not None:
        panel, x = CHART_TYPES[args.chart_type]
        panels = [panel]
    else:
        panels, x = [p.strip() for p in args.panels.split(",") if p.strip()], args.x
        unknown = [p for p in panels if p not in PANELS]
        if unknown or not panels:
            raise CaffelikeError(f"caffelike plot: unknown panel '{(unknown or [''])[0]}'; "
                                 f"known: {', '.join(PANELS)}")
    width, height = _parse_size(args.size) if args.size else (400 * len(panels) if len(panels) > 1 else 640, 400)
    draw(args.logs, args.output, panels, x, args.smooth, width, height, args.dpi, args.title, args.log_y)
    return 0
