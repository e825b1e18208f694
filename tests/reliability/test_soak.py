"""Issue 9, row 6: soak. Training the book's mouth Simpleconv3 keeps resident memory flat.

CI variant: ``CAFFELIKE_SOAK_ITERS`` iterations (default 200) at batch ``CAFFELIKE_SOAK_BATCH``
(default 8) after a warm-up of a quarter of them; resident memory (VmRSS of this process) may
grow by less than 5% after the warm-up. The full run of the issue is
``CAFFELIKE_SOAK_ITERS=2000 CAFFELIKE_SOAK_BATCH=96`` (see README.md). The numbers are logged
(``-o log_cli=true`` shows them live).
"""
from __future__ import annotations

import gc
import logging
import os
import re

import pytest

from .helpers import ROOT

MOUTH = ROOT / "models" / "mouth" / "simpleconv3"
ITERS = int(os.environ.get("CAFFELIKE_SOAK_ITERS", "200"))
BATCH = int(os.environ.get("CAFFELIKE_SOAK_BATCH", "8"))
log = logging.getLogger(__name__)


def _rss_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"),
                    reason="reads resident memory from Linux's /proc/self/status; this system has no /proc")
def test_mouth_simpleconv3_resident_memory_stays_flat(tmp_path, monkeypatch, record_property):
    from caffelike.proto import caffe_pb2
    from caffelike.solver.loop import get_solver

    monkeypatch.chdir(ROOT)  # the net's image lists are relative to the repository root
    monkeypatch.setenv("CAFFELIKE_DATA_WORKERS", "0")
    text = (MOUTH / "train.prototxt").read_text()
    text = re.sub(r"batch_size: 96", f"batch_size: {BATCH}", text)
    net = tmp_path / "train.prototxt"
    net.write_text(text)
    param = caffe_pb2.SolverParameter(net=str(net), type="Adam", base_lr=0.001, momentum=0.9,
                                      momentum2=0.999, lr_policy="fixed", max_iter=ITERS, display=0,
                                      snapshot=0, snapshot_after_train=False, random_seed=1,
                                      snapshot_prefix=str(tmp_path / "soak"))
    param.test_iter.append(1)
    param.test_interval = ITERS * 10  # TEST nets are built but not run: this measures training
    param.test_initialization = False
    solver = get_solver(param)
    warm = max(1, ITERS // 4)
    solver.step(warm)
    gc.collect()
    start = _rss_kib()
    samples = []
    for _ in range(4):
        solver.step((ITERS - warm) // 4)
        gc.collect()
        samples.append(_rss_kib())
    growth = (samples[-1] - start) / start
    log.warning("soak: %d iterations (batch %d) of mouth Simpleconv3; RSS after warm-up %d KiB, "
                "then %s KiB; growth %.2f%%", solver.iter, BATCH, start, samples, 100 * growth)
    record_property("rss_after_warmup_kib", start)
    record_property("rss_samples_kib", samples)
    assert solver.iter == warm + 4 * ((ITERS - warm) // 4)
    assert growth < 0.05, f"resident memory grew {100 * growth:.1f}% ({start} -> {samples} KiB)"
