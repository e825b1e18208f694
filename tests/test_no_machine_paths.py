"""No tracked file names a folder that exists only on some machine.

A test suite that runs an interpreter from one developer's virtual environment passes there
and fails in every fresh clone, so every file git tracks is scanned for absolute path literals.

What is scanned: every tracked text file (code, tests, bench, Makefile, shell, toml/cfg,
prototxt and Markdown alike: a README that says "cd <some machine's folder>" misleads a newcomer
as much as code does). Binary files (images, caffemodels, npz) are recognised by a NUL byte or
invalid UTF-8 and left out. Also left out:

- ``tests/golden/`` and ``tests/data/corpus/``: real Caffe's outputs and third-party files
  copied unchanged (a public net's HDF5 source in its author's home folder is part of the data
  the tests check, and so are the errors real Caffe printed about it);
- ``.gitignore``: its patterns are anchored at the repository root, not absolute paths.

What counts as an absolute path literal: a ``/`` that starts a token (at the start of a line or
after whitespace, a quote, a backtick, ``=``, ``,``, ``;``, ``|`` or ``:``), followed by a name
and at least one more ``/name`` component, or a lone name that is a usual root of home or work
folders (``home``, ``root``, ``work``, ``opt``, ``mnt``, ...). Its first component must not be a
system folder every machine has: /dev, /usr, /bin, /etc, /proc, /tmp. So URLs (the ``//`` after
the scheme starts no name), regexes (``^/``, ``(/``), f-strings (``{tmp}/x``), relative paths
(``a/b``), suffix checks (``endswith("/x")``, one component) and shebangs (``/usr``) pass.
"""
from __future__ import annotations

import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXCLUDED_DIRS = ("tests/golden/", "tests/data/corpus/")
EXCLUDED_FILES = {".gitignore"}
SYSTEM = {"dev", "usr", "bin", "etc", "proc", "tmp"}
# one-component paths that still name a place on one machine
ROOTS = {"home", "root", "work", "opt", "mnt", "media", "srv", "var", "Users", "scratch"}
PATH = re.compile(r"""(?:^|(?<=[\s"'`=,;|:]))/(?P<first>[A-Za-z_][\w.+-]*)(?P<rest>(?:/[\w.+-]+)+)?""")


def machine_paths(line: str) -> list[str]:
    """The absolute, non-system path literals in one line of text."""
    found = []
    for m in PATH.finditer(line):
        first = m.group("first")
        if first not in SYSTEM and (m.group("rest") or first in ROOTS):
            found.append(m.group(0))
    return found


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                             check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"this test lists the tracked files with `git ls-files` in {ROOT}: {exc}")
    return [f for f in out.split("\0")
            if f and not f.startswith(EXCLUDED_DIRS) and f not in EXCLUDED_FILES]


def _text(path: pathlib.Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_no_tracked_file_names_a_machine_path() -> None:
    files = _tracked_files()
    assert "Makefile" in files and "tests/reliability/helpers.py" in files  # the scan sees the code
    hits = []
    for name in files:
        path = ROOT / name
        text = _text(path) if path.is_file() else None
        for number, line in enumerate((text or "").splitlines(), 1):
            hits += [f"{name}:{number}: {p}" for p in machine_paths(line)]
    assert not hits, "absolute paths of one machine (use paths relative to the repository, " \
                     "sys.executable for subprocesses):\n" + "\n".join(hits)


# Built from pieces so that this file itself holds no such literal.
_MACHINE = "/" + "work/venv/bin/python"


@pytest.mark.parametrize("line, expected", [
    (f'PYTHON = "{_MACHINE}"', [_MACHINE]),
    (f"if [ -x {_MACHINE} ]; then PY={_MACHINE}; fi", [_MACHINE, _MACHINE]),
    ("Run: `cd /" + "work/main && make`", ["/" + "work/main"]),
    ("cd /" + "home", ["/" + "home"]),
    ("PATH=/" + "opt/x/bin:/usr/bin", ["/" + "opt/x/bin"]),
])
def test_detector_finds_machine_paths(line: str, expected: list[str]) -> None:
    assert machine_paths(line) == expected


@pytest.mark.parametrize("line", [
    "#!/usr/bin/env python3",
    'with open("/proc/self/status") as f:',
    "see https://github.com/BVLC/caffe/blob/master/tools/extra/parse_log.py",
    'DISPLAY = re.compile(r"\\] Iteration (\\d+) \\(.*\\), loss = (\\S+)$")',
    "sed -n 's/.*Iteration \\([[:digit:]]*\\).*/\\1/g' aux.txt",
    'snapshot_prefix: f"{tmp_path}/mouth"',
    'assert prefix.endswith("/solver")',
    "tests/golden/logs/<case>/parse_log_py",
    "``blobs_lr``/``weight_decay``/param names",
    "cat x > /tmp/bvlc/caffe.proto",
    "train/test nets, 12/24/48 channels, a / b",
])
def test_detector_ignores_what_is_no_machine_path(line: str) -> None:
    assert machine_paths(line) == []
