"""``caffelike parse_log`` against the CSVs real Caffe's tools/extra/parse_log.py wrote.

Expected rows come from tests/golden/logs/*/parse_log_py (Caffe's own tool on real Caffe logs)
and, for the book's log, from the author's grep extracts (scripts/*.refine).
"""
from __future__ import annotations

import csv
import pathlib
import re
import subprocess
import sys
from datetime import datetime

import pytest

from caffelike.cli import main as cli_main
from caffelike.logs.parse import parse_lines, parse_log

TESTS = pathlib.Path(__file__).resolve().parents[1]
LOGS = TESTS / "golden" / "logs"
BOOK_LOG = TESTS / "data" / "corpus" / "longpeng2008__yousan.ai" / "simpleconv3" / "scripts" / "log.txt"
CORPUS = TESTS / "data" / "corpus"

# fixtures where Caffe's tool is right: our files must be byte-identical
EXACT = ["adam_fixed", "interrupted_sigkill", "multistep_itersize2", "sgd_step"]


def _log_of(fixture: str) -> pathlib.Path:
    return next((LOGS / fixture).glob("*.log"))


def _rows(path: pathlib.Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _run(log: pathlib.Path, out: pathlib.Path, *extra: str) -> int:
    return cli_main(["parse_log", str(log), str(out), *extra])


@pytest.mark.parametrize("fixture", EXACT)
def test_same_bytes_as_caffe_tool(fixture: str, tmp_path: pathlib.Path) -> None:
    log = _log_of(fixture)
    assert _run(log, tmp_path) == 0
    for suffix in (".train", ".test"):
        expected = (LOGS / fixture / "parse_log_py" / (log.name + suffix)).read_bytes()
        assert (tmp_path / (log.name + suffix)).read_bytes() == expected


def test_two_test_nets_keeps_both_rows(tmp_path: pathlib.Path) -> None:
    log = _log_of("two_test_nets")
    assert _run(log, tmp_path) == 0
    golden_dir = LOGS / "two_test_nets" / "parse_log_py"
    assert (tmp_path / (log.name + ".train")).read_bytes() == (golden_dir / (log.name + ".train")).read_bytes()
    caffe = _rows(golden_dir / (log.name + ".test"))
    ours = _rows(tmp_path / (log.name + ".test"))
    assert ours[0] == caffe[0]
    # Caffe's row 0 is net #1's values written over net #0's row (net #0's time kept)
    merged = caffe[1]
    assert ours[1][0] == ours[2][0] == merged[0]
    assert ours[1][1] == merged[1] and ours[2][2:] == merged[2:]
    assert ours[1][2:] != merged[2:]  # net #0's own values, lost by Caffe's tool
    assert ours[3:] == caffe[2:]
    # the lost values are those the log prints for test net #0 at iteration 0
    text = log.read_text()
    block = text.split("Iteration 0, Testing net (#0)")[1].split("Testing net (#1)")[0]
    acc = re.search(r"accuracy = (\S+)", block).group(1)
    assert ours[1][3] == repr(float(acc))


def test_delimiter_flag(tmp_path: pathlib.Path) -> None:
    log = _log_of("sgd_step")
    assert _run(log, tmp_path, "--delimiter", "\t") == 0
    expected = (LOGS / "sgd_step" / "parse_log_py" / (log.name + ".test")).read_text().replace(",", "\t")
    assert (tmp_path / (log.name + ".test")).read_text() == expected


def _stamp(line: str) -> datetime:
    m = re.match(r"\S(\d{4})(\d\d)(\d\d) (\d+):(\d+):(\d+)\.(\d+)", line)
    return datetime(*(int(g) for g in m.groups()))


def test_year_prefix_log(tmp_path: pathlib.Path) -> None:
    """glog 0.6 stamps (I20261127 ...) crash Caffe's tool; the same run's values must come out."""
    log = _log_of("glog_year_prefix")
    assert _run(log, tmp_path) == 0
    # same training as sgd_step (fixture.json): values equal the sgd_step CSVs Caffe wrote
    for suffix in (".train", ".test"):
        caffe = _rows(LOGS / "sgd_step" / "parse_log_py" / ("sgd_step.log" + suffix))
        ours = _rows(tmp_path / (log.name + suffix))
        assert [r[:1] + r[2:] for r in ours] == [r[:1] + r[2:] for r in caffe]
    # seconds of the last test row: its first output line minus the Solving line
    lines = log.read_text().splitlines()
    start = _stamp(next(l for l in lines if "Solving" in l))
    last = _stamp([l for l in lines if "Test net output #0" in l][-1])
    ours = _rows(tmp_path / (log.name + ".test"))
    assert float(ours[-1][1]) == pytest.approx((last - start).total_seconds(), abs=1e-9)


def test_trailing_blank_lines_and_cut_line(tmp_path: pathlib.Path) -> None:
    """Caffe's tool crashes on a blank line; a log cut mid-line keeps every complete row."""
    log = _log_of("sgd_step")
    blank = tmp_path / "blank" / log.name
    blank.parent.mkdir()
    blank.write_text(log.read_text() + "\n\n")
    assert _run(blank, tmp_path / "out1") == 0
    for suffix in (".train", ".test"):
        assert (tmp_path / "out1" / (log.name + suffix)).read_bytes() == \
            (LOGS / "sgd_step" / "parse_log_py" / (log.name + suffix)).read_bytes()

    text = log.read_text()
    cut_at = text.index("Iteration 25 (")
    cut = tmp_path / "cut" / log.name
    cut.parent.mkdir()
    cut.write_text(text[: cut_at + 8])  # "...] Iteration 2" and nothing more
    assert _run(cut, tmp_path / "out2") == 0
    caffe = _rows(LOGS / "sgd_step" / "parse_log_py" / (log.name + ".train"))
    ours = _rows(tmp_path / "out2" / (log.name + ".train"))
    assert ours == caffe[: len(ours)] and ours[-1][0] == "24.0"


def test_log_ending_mid_report_keeps_partial_row() -> None:
    lines = (LOGS / "sgd_step" / "sgd_step.log").read_text().splitlines(keepends=True)
    last_acc = max(i for i, l in enumerate(lines) if "Test net output #0" in l)
    train, test = parse_lines(lines[: last_acc + 1], 2026)
    assert test.rows[-1]["NumIters"] == 40.0 and "loss" not in test.rows[-1]
    assert test.rows[-1]["accuracy"] == 0.78125


def test_book_log_matches_authors_extracts() -> None:
    """The book's 1,729-line Caffe 1.0 log: every series the author grepped comes out in order."""
    train, test = parse_log(str(BOOK_LOG))
    assert train.columns == ["NumIters", "Seconds", "LearningRate", "acc", "loss"]
    assert test.columns == ["NumIters", "Seconds", "LearningRate", "acc", "loss"]
    scripts = BOOK_LOG.parent

    def series(name: str) -> list[float]:
        return [float(l.split(" = ")[1].split()[0]) for l in (scripts / name).read_text().splitlines() if l]

    assert [r["acc"] for r in test.rows] == series("testacc.refine")
    assert [r["loss"] for r in test.rows] == series("testloss.refine")
    assert [r["acc"] for r in train.rows] == series("trainacc.refine")
    assert [r["loss"] for r in train.rows] == series("trainloss.refine")
    assert test.rows[-1]["NumIters"] == 10000.0 and test.rows[-1]["acc"] == 0.86
    assert all(r["LearningRate"] == 1e-05 for r in train.rows)  # base_lr, fixed policy
    seconds = [r["Seconds"] for r in train.rows]
    assert seconds == sorted(seconds) and seconds[0] >= 0


def test_2015_log_without_iter_per_second() -> None:
    """A Caffe rc2 log (2015): train rows come from 'Train net output' lines only when present."""
    log = CORPUS / "yuvval__nn_ex1" / "cifar100" / "log.txt"
    train, test = parse_log(str(log))
    text = log.read_text()
    n_tests = len(re.findall(r"Testing net \(#0\)", text))
    assert len(test.rows) == n_tests
    accs = [float(v) for v in re.findall(r"Test net output #0: \S+ = (\S+)", text)]
    name = test.columns[3]
    assert [r[name] for r in test.rows] == accs


def test_log_without_solving_line_uses_first_stamp(tmp_path: pathlib.Path) -> None:
    lines = (LOGS / "sgd_step" / "sgd_step.log").read_text().splitlines(keepends=True)
    kept = [l for l in lines if "Solving" not in l]
    train, _ = parse_lines(kept, 2026)
    caffe = _rows(LOGS / "sgd_step" / "parse_log_py" / "sgd_step.log.train")
    assert [repr(r["loss"]) for r in train.rows] == [r[3] for r in caffe[1:]]


def test_missing_log_is_a_one_line_error(tmp_path: pathlib.Path, capsys) -> None:
    assert _run(tmp_path / "nope.log", tmp_path) == 1
    err = capsys.readouterr().err
    assert "nope.log" in err and "Traceback" not in err


def test_top_level_wrapper(tmp_path: pathlib.Path) -> None:
    import subprocess
    import sys
    log = _log_of("adam_fixed")
    script = TESTS.parent / "tools" / "parse_log.py"
    res = subprocess.run([sys.executable, str(script), str(log), str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / (log.name + ".train")).read_bytes() == \
        (LOGS / "adam_fixed" / "parse_log_py" / (log.name + ".train")).read_bytes()


def test_log_commands_do_not_import_torch(tmp_path: pathlib.Path) -> None:
    code = ("import sys\nfrom caffelike.cli import main\n"
            f"assert main(['parse_log', {str(_log_of('sgd_step'))!r}, {str(tmp_path)!r}]) == 0\n"
            "import caffelike.commands.plot\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
