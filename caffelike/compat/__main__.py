"""``python -m caffelike.compat``: print the folder that holds the ``caffe`` shim package."""
from __future__ import annotations

import sys

from . import alias_path

sys.stdout.write(alias_path() + "\n")
