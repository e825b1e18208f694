#!/usr/bin/env python3
"""Drop-in for Caffe's tools/extra/plot_training_log.py: ``plot_training_log.py CHART_TYPE OUT LOG...``.

Also accepts caffelike's own flags (``plot_training_log.py LOG -o curves.png``): both run
``caffelike plot``.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffelike.cli import main  # noqa: E402


def plot_args(argv: list[str]) -> list[str]:
    """Caffe's ``CHART_TYPE OUT LOG...`` as ``caffelike plot`` flags; other argv as it is."""
    if len(argv) >= 3 and argv[0].isdigit():
        return [*argv[2:], "-o", argv[1], "--chart-type", argv[0]]
    return list(argv)


if __name__ == "__main__":
    sys.exit(main(["plot", *plot_args(sys.argv[1:])]))
