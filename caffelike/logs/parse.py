"""Caffe training logs -> the ``<log>.train`` / ``<log>.test`` tables (``caffelike parse_log``).

The output has the columns of Caffe's ``tools/extra/parse_log.py``: ``NumIters, Seconds,
LearningRate``, then one column per net output name in first-seen order, written with the
csv ``excel`` dialect (CRLF line ends). Seconds count from the ``Solving ...`` line.

Where Caffe's tool is right, the rows are the same. Where it is not, this parser differs:

* two test nets reporting at one iteration give two rows (Caffe's tool merges them);
* glog >= 0.6 prefixes with the year (``I20261127 ...``) are read (Caffe's tool crashes);
* lines without a glog prefix (blank lines, a line cut off by a crash) are skipped;
* the last row of a log that stops mid-report is kept, with empty cells for what is missing;
* ``nan``/``inf`` outputs are kept.
"""
from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, TextIO

from ..glog import get_logger
from ..solver import messages

BASE_COLUMNS = ("NumIters", "Seconds", "LearningRate")


@dataclass
class Table:
    """Rows of one CSV file: ``columns`` in first-seen order, ``rows`` as dicts."""

    columns: list[str] = field(default_factory=lambda: list(BASE_COLUMNS))
    rows: list[dict[str, float]] = field(default_factory=list)

    def add_column(self, name: str) -> None:
        if name not in self.columns:
            self.columns.append(name)


class _Clock:
    """Turns glog timestamps into datetimes; logs without a year count from the file's year."""

    def __init__(self, default_year: int):
        self.year = default_year
        self.last_month = 0

    def parse(self, line: str) -> datetime | None:
        m = messages.GLOG_STAMP.match(line)
        if m is None:
            return None
        year_text, month, day, hour, minute, second, micro = m.groups()
        month_i = int(month)
        if year_text is not None:
            year = int(year_text)
        else:
            if month_i < self.last_month:  # the log ran over New Year
                self.year += 1
            year = self.year
        try:
            when = datetime(year, month_i, int(day), int(hour), int(minute), int(second),
                            int(micro[:6].ljust(6, "0")))
        except (ValueError, OverflowError):  # a garbled stamp: treat the line as unstamped
            return None
        self.last_month = month_i
        return when


def _file_year(path: str) -> int:
    """The year a log without years in its prefix was written (Caffe uses the file's ctime)."""
    try:
        return datetime.fromtimestamp(os.path.getctime(path)).year
    except OSError:
        return datetime.now().year


class _Parser:
    """State machine over the log lines; see the module docstring for the row rules."""

    def __init__(self, default_year: int):
        self.clock = _Clock(default_year)
        self.tables = {"train": Table(), "test": Table()}
        self.open_rows: dict[str, dict[str, float] | None] = {"train": None, "test": None}
        self.iteration = -1.0
        self.learning_rate = math.nan

    def feed(self, lines: Iterable[str]) -> None:
        lines = list(lines)
        start, start_time = self._find_start(lines)
        if start_time is None:
            return
        for line in lines[start:]:
            self._line(line, start_time)
        for kind in self.tables:
            self._close(kind)
        for table in self.tables.values():
            _backfill_learning_rate(table.rows)

    def _find_start(self, lines: list[str]) -> tuple[int, datetime | None]:
        """Index after the ``Solving`` line and its time (else the first stamped line)."""
        for i, line in enumerate(lines):
            if messages.START in line:
                when = self.clock.parse(line)
                if when is not None:
                    return i + 1, when
        for i, line in enumerate(lines):
            when = self.clock.parse(line)
            if when is not None:
                return i, when
        return 0, None

    def _line(self, line: str, start_time: datetime) -> None:
        m = messages.ITERATION.search(line)
        if m:
            self.iteration = float(m.group(1))
        if self.iteration == -1:
            return
        when = self.clock.parse(line)
        if when is None:
            return
        seconds = (when - start_time).total_seconds()
        lr = messages.LEARNING_RATE.search(line)
        if lr:
            self.learning_rate = float(lr.group(1))
        if messages.TESTING.search(line):
            self._close("test")  # a new test pass (maybe another test net) starts its own row
        for kind, regex in (("train", messages.TRAIN_OUTPUT), ("test", messages.TEST_OUTPUT)):
            out = regex.search(line)
            if out:
                self._output(kind, out.group(2), out.group(3), seconds)

    def _output(self, kind: str, name: str, text: str, seconds: float) -> None:
        value = float(text)  # the pattern admits only numbers (nan and inf included)
        row = self.open_rows[kind]
        if row is not None and (row["NumIters"] != self.iteration or name in row):
            self._close(kind)
            row = None
        if row is None:
            row = {"NumIters": self.iteration, "Seconds": seconds,
                   "LearningRate": self.learning_rate}
            self.open_rows[kind] = row
        row[name] = value
        self.tables[kind].add_column(name)

    def _close(self, kind: str) -> None:
        row = self.open_rows[kind]
        if row is not None:
            self.tables[kind].rows.append(row)
            self.open_rows[kind] = None


def _backfill_learning_rate(rows: list[dict[str, float]]) -> None:
    """Give the first rows, reported before any ``lr =`` line, the first rate printed."""
    known = next((r["LearningRate"] for r in rows if not math.isnan(r["LearningRate"])), None)
    if known is None:
        return
    for row in rows:
        if not math.isnan(row["LearningRate"]):
            break
        row["LearningRate"] = known


def parse_lines(lines: Iterable[str], default_year: int | None = None) -> tuple[Table, Table]:
    """Parse log lines into (train, test) tables."""
    parser = _Parser(default_year if default_year is not None else datetime.now().year)
    parser.feed(lines)
    return parser.tables["train"], parser.tables["test"]


def parse_log(path: str) -> tuple[Table, Table]:
    """Parse a Caffe (or caffelike) log file into (train, test) tables."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_lines(f, _file_year(path))


def write_table(table: Table, out: TextIO, delimiter: str = ",") -> None:
    """Write a table as Caffe's tool does: csv excel dialect, floats as Python writes them."""
    writer = csv.writer(out, dialect="excel", delimiter=delimiter)
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([row.get(c, "") for c in table.columns])


def save_tables(log_path: str, out_dir: str, train: Table, test: Table,
                delimiter: str = ",", verbose: bool = False) -> list[str]:
    """Write ``<log>.train`` and ``<log>.test`` into out_dir; tables without rows are skipped."""
    logger = get_logger("parse_log")
    level = logging.INFO if verbose else logging.DEBUG
    os.makedirs(out_dir, exist_ok=True)
    written = []
    base = os.path.basename(log_path)
    for suffix, table in ((".train", train), (".test", test)):
        target = os.path.join(out_dir, base + suffix)
        if not table.rows:
            logger.log(level, "Not writing %s; no lines to write", target)
            continue
        with open(target, "w", newline="", encoding="utf-8") as f:
            write_table(table, f, delimiter)
        logger.log(level, "Wrote %s", target)
        written.append(target)
    return written

