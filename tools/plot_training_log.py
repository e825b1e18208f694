#!/usr/bin/env python3
"""Drop-in for Caffe's tools/extra/plot_training_log.py: ``plot_training_log.py CHART_TYPE OUT LOG...``.

Also accepts caffelike's own flags (``plot_training_log.py LOG -o curves.png``).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffelike.tools.plot import legacy_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(legacy_main(sys.argv[1:]))
