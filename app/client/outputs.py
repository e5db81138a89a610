"""Output rows and crash-safe, resumable writers for `score` (CSV, JSONL, FHIR NDJSON) and the errors file.

Every row is one line, written with a single write + flush + fsync, so a killed run leaves at most one partial
last line; `repair_partial_line` truncates it on the next start. Rows already present are skipped on resume.
CSV text cells that start like a spreadsheet formula are written with a leading quote (`csvcells`) and read back
without it. The errors file is not appended to: it is replaced as a whole (temp file + rename) by `write_errors`.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.client import fhir
from app.client.csvcells import neutralise, restore
from app.client.inputs import patient_id_problem, printable
from app.client.types import Prediction, SourceUse

COLUMNS = (
    "patient_id",
    "risk",
    "surv_1y",
    "surv_3y",
    "surv_5y",
    "model_id",
    "model_sha256",
    "top_sources",
    "scored_at",
)
ERROR_COLUMNS = ("patient_id", "files", "status", "message", "failed_at")
FORMATS = ("csv", "jsonl", "fhir")
DAYS_PER_YEAR = 365.0


class OutputError(ValueError):
    """The output file cannot be resumed (foreign header, other model, malformed line): exit code 2."""


def survival_at(times_days: Sequence[float], probabilities: Sequence[float], t: float) -> float:
    """Step-function survival: S(t) = probabilities[i] for the last times_days[i] ≤ t; 1 before."""
    if len(times_days) != len(probabilities):
        raise ValueError(f"times_days ({len(times_days)}) and probabilities ({len(probabilities)}) differ in length")
    i = bisect.bisect_right(list(times_days), t) - 1
    return 1.0 if i < 0 else float(probabilities[i])


def top_sources_text(sources: Sequence[SourceUse]) -> str:
    """ "BRCA:0.41;LUAD:0.22": sources by decreasing merge weight w (empty for non-STEPH models).

    Sources selected by top-k whose weight rounds to 0.00 contributed nothing and are left out."""
    ordered = sorted((s for s in sources if round(s.weight, 2) > 0), key=lambda s: -s.weight)
    return ";".join(f"{s.cancer}:{s.weight:.2f}" for s in ordered)


def build_row(pred: Prediction, *, patient_id: str, model_id: str, model_sha256: str, scored_at: str) -> dict:
    """One output row: risk, S at 1/3/5 years (365-day years = the bin width), model, …"""
    id_problem = patient_id_problem(patient_id)
    if id_problem:  # it could not be read back on resume: never written
        raise ValueError(id_problem)
    if not math.isfinite(pred.risk):
        raise ValueError(f"server returned a non-finite risk for {patient_id}: {pred.risk}")
    row: dict[str, Any] = {"patient_id": patient_id, "risk": pred.risk}
    for years in (1, 3, 5):
        row[f"surv_{years}y"] = survival_at(pred.times_days, pred.probabilities, years * DAYS_PER_YEAR)
    row.update(
        model_id=pred.model_id or model_id,
        model_sha256=pred.model_sha256 or model_sha256,
        top_sources=top_sources_text(pred.sources),
        scored_at=scored_at,
    )
    return row


def format_for(output: Path, fmt: str | None) -> str:
    """The explicit --format, else from the suffix: .csv → csv, .jsonl/.ndjson/.json → jsonl."""
    if fmt:
        if fmt not in FORMATS:
            raise OutputError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        return fmt
    suffix = output.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise OutputError(f"cannot tell the format of {output.name}: name it .csv or .jsonl, or pass --format")


def repair_partial_line(path: Path) -> int:
    """Truncate an unterminated last line (left by a killed run); returns how many bytes were removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return 0
        keep, pos, block = 0, size, 65536
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return size - keep


def _csv_line(values: Sequence[Any]) -> str:
    """One CSV line: line breaks inside text become spaces, formula-like text cells get a leading quote."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        [neutralise(v.replace("\r", " ").replace("\n", " ")) if isinstance(v, str) else v for v in values]
    )
    return buf.getvalue()


def read_done(path: Path, fmt: str) -> dict[str, str]:
    """{patient_id: model_id} of the complete rows already in `path` (after repair); {} when absent/empty."""
    if not path.exists() or path.stat().st_size == 0:
        return {}
    done: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        if fmt == "csv":
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is not None and tuple(header) != COLUMNS:
                raise OutputError(
                    f"{path.name} has a different header ({','.join(header)[:120]}); choose a new output file"
                )
            for row in reader:
                if row:
                    done[restore(row[0])] = restore(row[COLUMNS.index("model_id")])
            return done
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                pid, mid = fhir.row_key(obj) if fmt == "fhir" else (obj["patient_id"], obj["model_id"])
            except (ValueError, KeyError, TypeError, IndexError):
                raise OutputError(
                    f"{path.name} line {n} is not a {fmt} row written by steph-client; choose a new output file"
                ) from None
            done[str(pid)] = str(mid)
    return done


class LineWriter:
    """Append-only line writer: each `write_line` is one write + flush + fsync."""

    def __init__(self, path: Path, header: str | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_partial_line(path)
        self._fh = path.open("ab")
        if header is not None and self._fh.tell() == 0:
            self.write_line(header)

    def write_line(self, line: str) -> None:
        self._fh.write(line.encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


class RowWriter(LineWriter):
    """Scores in csv, jsonl or fhir (NDJSON Observation) format."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.fmt = fmt
        super().__init__(path, _csv_line(COLUMNS) if fmt == "csv" else None)

    def write(self, row: dict[str, Any]) -> None:
        if self.fmt == "csv":
            self.write_line(_csv_line([row[c] for c in COLUMNS]))
        elif self.fmt == "jsonl":
            self.write_line(json.dumps({c: row[c] for c in COLUMNS}, allow_nan=False) + "\n")
        else:
            self.write_line(json.dumps(fhir.observation(row), allow_nan=False) + "\n")


def read_errors(path: Path) -> list[dict[str, str]]:
    """The rows of an errors file written by `write_errors` (or appended by older clients); [] when absent.

    OutputError when the file exists but is not a steph-client errors file: it is never overwritten."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is not None and tuple(header) != ERROR_COLUMNS:
            raise OutputError(
                f"{path} is not a steph-client errors file (header {','.join(header)[:120]}); "
                "choose another --errors file"
            )
        width = len(ERROR_COLUMNS)
        return [dict(zip(ERROR_COLUMNS, map(restore, row), strict=True)) for row in reader if len(row) == width]


def error_row(patient_id: str, files: str, status: int, message: str, failed_at: str) -> dict[str, Any]:
    """One errors-file row; control characters in the id and paths are shown as escapes (\\n, \\t)."""
    return {"patient_id": printable(patient_id), "files": printable(files), "status": status,
            "message": message, "failed_at": failed_at}  # fmt: skip


def write_errors(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Replace the errors file with exactly `rows` (header first), or remove it when there are none.

    Written to a temporary file in the same folder, fsynced, then renamed over `path`: a reader (or a run
    killed meanwhile) sees the old list or the new one, never a mix."""
    if not rows:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _csv_line(ERROR_COLUMNS) + "".join(_csv_line([r[c] for c in ERROR_COLUMNS]) for r in rows)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
