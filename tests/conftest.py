"""Shared test fixtures: paths to the bundled golden data and corpus."""
from __future__ import annotations

import pathlib

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent
GOLDEN = TESTS / "golden"
CORPUS = TESTS / "data" / "corpus"


@pytest.fixture
def golden_dir() -> pathlib.Path:
    return GOLDEN


@pytest.fixture
def corpus_dir() -> pathlib.Path:
    return CORPUS
