"""The CPU malloc tuning of the solver and pycaffe's forward (caffelike.allocator): set once, opt-out honoured."""
from __future__ import annotations

import sys

import pytest

from caffelike import allocator


def test_keep_freed_memory_is_idempotent() -> None:
    first = allocator.keep_freed_memory()
    assert allocator.keep_freed_memory() == first
    if sys.platform.startswith("linux") and first:
        assert allocator._done


def test_environment_opt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_done", False)
    monkeypatch.setenv("CAFFELIKE_MALLOC_TUNING", "0")
    assert allocator.keep_freed_memory() is False
    assert allocator._done is False
