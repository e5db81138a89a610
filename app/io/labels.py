"""Survival labels and train/test splits from CSV (SPEC §4).

labels.csv: columns patient_id, pathology_id, t (days, > 0), e (1 = event, 0 = censored), optional project;
one row per slide. A patient's label (t, e, project) is taken from its first row; its slides are the
pathology_ids of all its rows, in file order.

splits.csv: columns train, test (optional val) — each a list of patient ids, padded with empty cells.
An unnamed first column (a pandas index) is ignored.
Errors raise LabelError naming the file, the line (1 = header) and the column, and how to fix it.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from app.io.errors import LabelError, display_name_of
from app.io.safe_paths import excerpt

LABEL_COLUMNS = ("patient_id", "pathology_id", "t", "e")
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class PatientLabel:
    """One patient: its slides (pathology ids), follow-up time in days, event flag (1/0), project (or '')."""

    patient_id: str
    slide_ids: list[str] = field(default_factory=list)
    time: float = 0.0
    event: int = 0
    project: str = ""


def _read_rows(path: Path, name: str, what: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, cells)]) of a CSV; blank lines skipped. LabelError when empty or unreadable."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            lines = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise LabelError(f"{name}: not a UTF-8 text file; save the {what} as CSV (UTF-8)", file_name=name) from None
    except OSError:
        raise LabelError(f"{name}: cannot be read (missing, a link loop or no permission); fix the file",
                         file_name=name) from None  # fmt: skip
    except csv.Error as exc:
        raise LabelError(f"{name}: not a valid CSV ({excerpt(str(exc), 80)}); save the {what} as CSV",
                         file_name=name) from None  # fmt: skip
    rows = [(i + 1, [c.strip() for c in cells]) for i, cells in enumerate(lines) if any(c.strip() for c in cells)]
    if not rows:
        raise LabelError(f"{name}: the file is empty; it must start with a header line", file_name=name)
    (_, header), body = rows[0], rows[1:]
    if len(header) == 1 and ("\t" in header[0] or ";" in header[0]):
        raise LabelError(
            f"{name}: line 1 has a single column {excerpt(header[0])!r}; the file must be comma-separated",
            file_name=name,
        )
    return header, body


def read_labels(path: str | os.PathLike[str], *, display_name: str | None = None) -> list[PatientLabel]:
    """labels.csv -> [PatientLabel] in order of first appearance.

    Raises LabelError: missing column, empty id, non-numeric / non-positive / non-finite t, e not 0 or 1,
    a pathology_id listed twice, or no data rows.
    """
    path = Path(path)
    name = display_name_of(path, display_name)
    header, rows = _read_rows(path, name, "labels")
    missing = [c for c in LABEL_COLUMNS if c not in header]
    if missing:
        raise LabelError(
            f"{name}: missing column {missing[0]!r} (found: {excerpt(', '.join(header), 60)}); "
            f"the labels need the columns "
            f"{', '.join(LABEL_COLUMNS)} and optionally project",
            file_name=name,
        )
    if not rows:
        raise LabelError(f"{name}: no data rows after the header; add one row per slide", file_name=name)
    col = {c: header.index(c) for c in (*LABEL_COLUMNS, "project") if c in header}
    patients: dict[str, PatientLabel] = {}
    seen_slides: dict[str, int] = {}
    for line, cells in rows:
        cells = cells + [""] * (len(header) - len(cells))
        pid, sid = (
            _required(cells, col, "patient_id", name, line),
            _required(cells, col, "pathology_id", name, line),
        )
        if sid in seen_slides:
            raise LabelError(
                f"{name}: line {line}, column 'pathology_id': slide {excerpt(sid)!r} is already listed on line "
                f"{seen_slides[sid]}; list each slide once",
                file_name=name,
            )
        seen_slides[sid] = line
        time, event = _time(cells[col["t"]], name, line), _event(cells[col["e"]], name, line)
        if pid not in patients:
            project = cells[col["project"]] if "project" in col else ""
            patients[pid] = PatientLabel(pid, [], time, event, project)
        patients[pid].slide_ids.append(sid)
    return list(patients.values())


def _required(cells: list[str], col: dict[str, int], column: str, name: str, line: int) -> str:
    value = cells[col[column]]
    if not value:
        raise LabelError(f"{name}: line {line}, column {column!r} is empty; fill it in", file_name=name)
    return value


MAX_FOLLOW_UP_DAYS = 36525.0  # a century: larger times are a unit mistake (hours, seconds)


def _time(raw: str, name: str, line: int) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise LabelError(
            f"{name}: line {line}, column 't': {excerpt(raw)!r} is not a positive number of days; t is the follow-up "
            "time in days (> 0)",
            file_name=name,
        )
    if value > MAX_FOLLOW_UP_DAYS:
        raise LabelError(
            f"{name}: line {line}, column 't': {excerpt(raw)!r} days is more than a century of follow-up; t is in "
            f"days (at most {MAX_FOLLOW_UP_DAYS:g}): were the times given in hours or seconds?",
            file_name=name,
        )
    return value


def _event(raw: str, name: str, line: int) -> int:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if value not in (0.0, 1.0):
        raise LabelError(
            f"{name}: line {line}, column 'e': {excerpt(raw)!r} is not 0 or 1; e = 1 if the event was observed, "
            "0 if censored",
            file_name=name,
        )
    return int(value)


def read_splits(path: str | os.PathLike[str], *, display_name: str | None = None) -> dict[str, list[str]]:
    """splits.csv -> {"train": [...], "test": [...], ("val": [...])}; test is [] when the column is absent.

    Raises LabelError: no `train` column, an unknown named column, a patient listed twice.
    """
    path = Path(path)
    name = display_name_of(path, display_name)
    header, rows = _read_rows(path, name, "splits")
    named = {i: h for i, h in enumerate(header) if h and not h.startswith("Unnamed")}
    unknown = [h for h in named.values() if h not in SPLIT_NAMES]
    if unknown:
        raise LabelError(
            f"{name}: unknown split column {excerpt(unknown[0])!r}; the columns must be train, test and optionally val",
            file_name=name,
        )
    if "train" not in named.values():
        raise LabelError(
            f"{name}: no 'train' column (found: {excerpt(', '.join(header), 60) or 'none'}); the splits need columns "
            "train and test",
            file_name=name,
        )
    splits: dict[str, list[str]] = {h: [] for h in named.values()}
    splits.setdefault("test", [])
    where: dict[str, tuple[str, int]] = {}
    for line, cells in rows:
        for i, split in named.items():
            pid = cells[i] if i < len(cells) else ""
            if not pid:
                continue
            if pid in where:
                first, first_line = where[pid]
                raise LabelError(
                    f"{name}: line {line}, column {split!r}: patient {excerpt(pid)!r} is already in split {first!r} "
                    f"(line {first_line}); each patient belongs to one split",
                    file_name=name,
                )
            where[pid] = (split, line)
            splits[split].append(pid)
    return splits
