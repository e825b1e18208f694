"""Helpers of the reliability tests: golden cases copied to a scratch folder, the CLI in-process."""
from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import sys
from dataclasses import dataclass

TESTS = pathlib.Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
GOLDEN = TESTS / "golden"
SOLVERS = GOLDEN / "solvers"
PYTHON = sys.executable  # the interpreter running the tests, wherever it lives

# ``caffelike <cmd>: error: <message>`` (caffelike/cli.py prints exactly this on a CaffelikeError)
ERROR_LINE = re.compile(r"^caffelike (\S+): error: (.+)$")
# ``file:line[:col]: layer 'name' (Type): what`` (caffelike/errors.py, Where.__str__)
LOCATED = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+)(?::(?P<col>\d+))?: (?:layer '(?P<layer>[^']+)' "
                     r"\((?P<type>[^)]+)\): )?(?P<what>.+)$")


def copy_case(case: str, dest: pathlib.Path) -> pathlib.Path:
    """A golden solver case's inputs (not Caffe's snapshots or logs), copied under ``dest``."""
    out = dest / case
    shutil.copytree(SOLVERS / case, out,
                    ignore=shutil.ignore_patterns("snapshots", "*.npz", "*.json", "log.txt", "*.csv"))
    (out / "snapshots").mkdir()
    for p in out.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return out


def edit(path: pathlib.Path, old: str, new: str) -> None:
    """Replace the first ``old`` in a text file (the test fails if it is not there)."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def line_of(path: pathlib.Path, needle: str) -> int:
    """1-based number of the first line holding ``needle``."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def layer_line(path: pathlib.Path, name: str) -> int:
    """The line of the ``layer {`` block whose name is ``name`` (what SourceMap reports)."""
    lines = path.read_text().splitlines()
    start = None
    for number, line in enumerate(lines, start=1):
        if line.strip().startswith("layer") and "{" in line:
            start = number
        if f'name: "{name}"' in line and start is not None:
            return start
    raise AssertionError(f"layer {name!r} not in {path}")


def tree_digest(folder: pathlib.Path) -> dict[str, str]:
    """name -> sha256 of every file under ``folder`` (to prove nothing was written over)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class CliResult:
    status: int
    stderr: str
    error: str  # the message after "caffelike <cmd>: error: "


def run_cli(capsys, *argv: str) -> CliResult:
    """``caffelike <argv>`` in-process; the status, all of stderr, and its one error line.

    Asserts the shape every failure must have: a non-zero status, no Python traceback, and
    exactly one ``caffelike <cmd>: error: ...`` line, itself one line.
    """
    from caffelike.cli import main

    capsys.readouterr()
    status = main(list(argv))
    err = capsys.readouterr().err
    assert status != 0, f"expected a failure, got status 0; stderr:\n{err[-2000:]}"
    assert "Traceback" not in err, err[-4000:]
    errors = [line for line in err.splitlines() if ERROR_LINE.match(line)]
    assert len(errors) == 1, f"expected one error line, got {errors!r}; stderr:\n{err[-2000:]}"
    assert ERROR_LINE.match(errors[0]).group(1) == argv[0]
    return CliResult(status, err, ERROR_LINE.match(errors[0]).group(2))


def assert_located(message: str, file: str, line: int | None = None, layer: str | None = None,
                   type: str | None = None) -> re.Match:
    """The message starts ``file:line[:col]: layer 'layer' (type): ...`` as given."""
    m = LOCATED.match(message)
    assert m, f"not 'file:line: ...': {message!r}"
    assert os.path.basename(m["file"]) == file, message
    if line is not None:
        assert int(m["line"]) == line, message
    if layer is not None:  # in the Where prefix, or (parse errors) named inside the text
        named = f"layer '{layer}' ({type})"
        assert (m["layer"], m["type"]) == (layer, type) or named in m["what"], message
    return m
