#!/usr/bin/env python3
"""Drop-in for Caffe's tools/extra/parse_log.py: ``parse_log.py LOG OUTDIR [--delimiter ,]``."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from caffelike.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["parse_log", *sys.argv[1:]]))
