"""Real Caffe's log tools (parse_log.py, parse_log.sh), run as the golden logs' CSVs were made.

The tools are not in this repository: they live in ``shared/caffe_reference/tools_extra/``
beside the clone (CI lays shared/ there; see its README). ``parse_log.py`` is Python 2 in one
statement, so it runs from a temporary copy with that statement turned into a call and nothing
else changed. ``parse_log.sh`` runs ``extract_seconds.py`` through ``python`` on the PATH, which
is this interpreter (the golden outputs were made with Debian's python3 there).
"""
from __future__ import annotations

import csv
import os
import pathlib
import shutil
import subprocess
import sys
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOLS = ROOT.parent / "shared" / "caffe_reference" / "tools_extra"
PY2_STATEMENT = "print 'Wrote %s' % output_filename"
PY3_CALL = "print('Wrote %s' % output_filename)"


def prepare_tools(dest: pathlib.Path) -> pathlib.Path:
    """Copies of the three tools under ``dest`` (parse_log.py made Python 3), plus ``dest/bin/python``."""
    if not TOOLS.is_dir():
        pytest.fail(f"real Caffe's log tools are missing: {TOOLS} does not exist. The tests need "
                    "the shared/ folder beside the repository clone (as CI has it).")
    dest.mkdir(parents=True, exist_ok=True)
    text = (TOOLS / "parse_log.py").read_text()
    assert text.count(PY2_STATEMENT) == 1, "parse_log.py is not the file the golden outputs came from"
    (dest / "parse_log.py").write_text(text.replace(PY2_STATEMENT, PY3_CALL))
    with warnings.catch_warnings():  # its regexes are not raw strings: Python 3 warns, runs them
        warnings.simplefilter("ignore")
        compile((dest / "parse_log.py").read_text(), "parse_log.py", "exec")  # now valid Python 3
    for name in ("extract_seconds.py", "parse_log.sh"):
        shutil.copyfile(TOOLS / name, dest / name)
    (dest / "extract_seconds.py").chmod(0o755)  # parse_log.sh executes it directly
    (dest / "bin").mkdir(exist_ok=True)
    (dest / "bin" / "python").symlink_to(sys.executable)
    return dest


def run_parse_log_py(tools: pathlib.Path, log: pathlib.Path,
                     out: pathlib.Path) -> subprocess.CompletedProcess:
    """``python parse_log.py --verbose LOG OUT``: writes ``OUT/<log name>.train`` and ``.test``."""
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, str(tools / "parse_log.py"), "--verbose", str(log), str(out)],
                          capture_output=True, text=True, timeout=120)


def run_parse_log_sh(tools: pathlib.Path, log: pathlib.Path,
                     out: pathlib.Path) -> subprocess.CompletedProcess:
    """``bash parse_log.sh LOG`` in ``out``, where it writes ``<log name>.train`` and ``.test``."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PATH=f"{tools / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(["bash", str(tools / "parse_log.sh"), str(log.resolve())], cwd=out, env=env,
                          capture_output=True, text=True, timeout=120)


def csv_rows(path: pathlib.Path) -> list[dict[str, str]]:
    """parse_log.py's output: comma-separated, header first."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sh_rows(path: pathlib.Path) -> list[dict[str, str]]:
    """parse_log.sh's output: a ``#Iters ...`` header, then whitespace-separated columns."""
    lines = path.read_text().splitlines()
    header = lines[0].lstrip("#").split()
    return [dict(zip(header, line.split())) for line in lines[1:]]
