"""The corpus nets as real Caffe met them: shared by test_refused_nets (the nets Caffe refused,
each refused here for Caffe's reason) and test_corpus_outcomes (every corpus net's outcome).

``SKIPPED_ROWS``: tests/golden/shapes/skipped.json (NETS.md §2), each corpus net that
``caffe.Net(file, caffe.TEST)`` could not build from an empty folder, with Caffe's error lines.
"""
from __future__ import annotations

import re
import sys

import pytest

from .conftest import GOLDEN, load_json

CORPUS = GOLDEN.parent / "data" / "corpus"
SKIPPED_ROWS: list[dict] = load_json(GOLDEN / "shapes" / "skipped.json")["nets"]
MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '(\S+)'")


def hide_missing_modules(rows: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the Python layer modules Caffe could not import unimportable here too (the test
    suite's own tests/layers package is a 'layers')."""
    for row in rows:
        for line in row["caffe_error"]:
            if m := MISSING_MODULE.search(line):
                monkeypatch.setitem(sys.modules, m.group(1), None)
