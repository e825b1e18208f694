"""Real Caffe's log tools read caffelike's training logs as they read real Caffe's.

Caffe's own ``tools/extra/parse_log.py`` and ``parse_log.sh`` (caffe_tools.py says where they
come from and how they run) are first run on real Caffe's logs (tests/golden/logs/<fixture>/)
and must give exactly the files kept there (``parse_log_py/``, ``parse_log_sh/``) with the
return code of fixture.json, which shows they run as they did for the golden data. Then they
run on caffelike's log of the same training and must give the same tables: same columns, same
rows, same iterations and learning rates, outputs within the whole-run tolerance of
tests/golden/README.md (Seconds is wall time: only checked to be a time).
"""
from __future__ import annotations

import json

import pytest

from .caffe_tools import csv_rows, run_parse_log_py, run_parse_log_sh, sh_rows
from .helpers import LOGS, RUN_RTOL

FIXTURES = sorted(p.name for p in LOGS.iterdir() if (p / "fixture.json").exists())
# golden/logs fixture -> our run of the same training (golden/solvers case, or two_test_nets)
SAME_RUN = {"sgd_step": "sgd_step", "multistep_itersize2": "sgd_multistep_itersize2",
            "adam_fixed": "adam_fixed", "two_test_nets": "two_test_nets"}
RUNNERS = {"parse_log_py": run_parse_log_py, "parse_log_sh": run_parse_log_sh}
READERS = {"parse_log_py": csv_rows, "parse_log_sh": sh_rows}
EXACT_COLUMNS = {"NumIters", "LearningRate", "Iters"}  # copied from the log's text by both tools
TIME_COLUMNS = {"Seconds"}
ACCURACY_COLUMNS = {"accuracy", "TestAccuracy"}  # counts over 64 samples: one sample is 1/64


def _fixture(name: str) -> dict:
    return json.loads((LOGS / name / "fixture.json").read_text())


def test_every_golden_log_is_covered():
    assert set(SAME_RUN) <= set(FIXTURES)
    assert {"glog_year_prefix", "interrupted_sigkill"} <= set(FIXTURES)


@pytest.mark.parametrize("tool", sorted(RUNNERS))
@pytest.mark.parametrize("name", FIXTURES)
def test_tools_give_the_golden_files_for_real_caffe_logs(caffe_tools, tmp_path, name, tool):
    fixture = _fixture(name)
    log = tmp_path / fixture["log"]
    log.write_bytes((LOGS / name / fixture["log"]).read_bytes())
    result = RUNNERS[tool](caffe_tools, log, tmp_path / "out")
    assert result.returncode == fixture[tool]["returncode"], result.stderr[-2000:]
    for output in fixture[tool]["outputs"]:
        assert (tmp_path / "out" / output).read_bytes() == (LOGS / name / tool / output).read_bytes(), output


@pytest.mark.parametrize("tool", sorted(RUNNERS))
@pytest.mark.parametrize("name", sorted(SAME_RUN))
def test_tools_read_our_log_as_real_caffes(request, caffe_tools, tmp_path, name, tool):
    case = SAME_RUN[name]
    runs = request.getfixturevalue("two_test_nets_run") if case == "two_test_nets" else \
        request.getfixturevalue("golden_runs")[case]
    work, status, lines = runs
    assert status == 0
    fixture = _fixture(name)
    log = tmp_path / fixture["log"]  # the same file name, so the outputs are named alike
    log.write_text("\n".join(lines) + "\n")
    result = RUNNERS[tool](caffe_tools, log, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    rtol = RUN_RTOL.get(case, 1e-3)
    for output in fixture[tool]["outputs"]:
        want = READERS[tool](LOGS / name / tool / output)
        got = READERS[tool](tmp_path / "out" / output)
        assert len(got) == len(want), output
        for g, w in zip(got, want):
            assert list(g) == list(w), output
            for column, value in w.items():
                where = (output, g.get("NumIters", g.get("Iters")), column)
                if column in EXACT_COLUMNS:
                    assert g[column] == value, where
                elif column in TIME_COLUMNS:
                    assert float(g[column]) >= 0, where
                elif column in ACCURACY_COLUMNS:
                    assert abs(float(g[column]) - float(value)) <= 1 / 64 + 1e-6, where
                else:
                    assert float(g[column]) == pytest.approx(float(value), rel=rtol, abs=1e-5), where
