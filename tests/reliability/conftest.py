"""Fixtures of the reliability tests: quiet logs, one torch thread, scratch copies of golden cases."""
from __future__ import annotations

import pathlib

import pytest
import torch

from .helpers import copy_case


@pytest.fixture(autouse=True)
def _quiet_single_thread(monkeypatch):
    """Warnings and errors only (the matrix checks stderr), and tiny nets on one thread."""
    monkeypatch.setenv("GLOG_minloglevel", "1")
    monkeypatch.delenv("GLOG_log_dir", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def sgd_case(tmp_path, monkeypatch) -> pathlib.Path:
    """golden/solvers/sgd_step (TinyBN on HDF5) copied to a scratch folder, which is the cwd."""
    work = copy_case("sgd_step", tmp_path)
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def image_case(tmp_path, monkeypatch) -> pathlib.Path:
    """golden/solvers/imagedata_png (TinyBN on an ImageData list of PNGs), the cwd."""
    work = copy_case("imagedata_png", tmp_path)
    monkeypatch.chdir(work)
    return work
