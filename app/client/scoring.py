"""Batch scoring engine: many patients → `POST /predict` on a thread pool → one resumable output file.

Workers only call `predict(patient)`; the calling thread is the single writer (rows and errors), so lines
never interleave. Input errors (4xx other than 401/403/429) and a 500 that persisted after every retry
go to the errors file and the run goes on; auth errors and an unreachable or overloaded server (connection
errors, 429/502/503/504 after every retry) abort the run (rerun to resume).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from app.client.inputs import PatientInput
from app.client.outputs import ErrorWriter, OutputError, RowWriter, build_row, read_done, repair_partial_line
from app.client.transport import AuthError, ClientError, ConnectionFailed
from app.client.types import Prediction

PredictFn = Callable[[PatientInput], Prediction]
SERVICE_DOWN = (429, 502, 503, 504)  # still failing after every retry: stop the run rather than fail everyone


@dataclass
class ScoreSummary:
    """Counts of one run. `aborted` holds the reason when the run stopped early (auth, unreachable server)."""

    total: int = 0
    scored: int = 0
    skipped: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    aborted: str | None = None
    abort_status: int = 0

    def text(self) -> str:
        line = (
            f"scored {self.scored}, skipped {self.skipped} (already in output), failed {self.failed}, "
            f"of {self.total} patients in {self.elapsed_s:.1f}s"
        )
        return line + (f"; ABORTED: {self.aborted}" if self.aborted else "")


def utc_now() -> str:
    """UTC ISO-8601 with a Z suffix and second precision, e.g. 2026-11-27T00:12:03Z."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def default_errors_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.errors.csv")


class _Errors:
    """Opens the errors file on first use, so a clean run leaves none behind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: ErrorWriter | None = None

    def write(self, patient: PatientInput, status: int, message: str) -> None:
        if self._writer is None:
            self._writer = ErrorWriter(self.path)
        self._writer.write(patient.patient_id, patient.files_text(), status, message, utc_now())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def pending_patients(patients: Sequence[PatientInput], output: Path, fmt: str, model_id: str) -> list[PatientInput]:
    """Repair the output's last line, then return the patients not yet in it (never another model's)."""
    repair_partial_line(output)
    done = read_done(output, fmt)
    others = sorted({m for m in done.values() if m != model_id})
    if others:
        raise OutputError(
            f"{output.name} already holds scores of model(s) {', '.join(others)}; "
            f"write model {model_id} to a new output file"
        )
    return [p for p in patients if p.patient_id not in done]


@dataclass
class _Run:
    """What the single writer thread needs while a pool works."""

    rows: RowWriter
    errors: _Errors
    summary: ScoreSummary
    bar: tqdm
    model_id: str
    model_sha256: str

    def fail(self, patient: PatientInput, status: int, message: str) -> None:
        self.errors.write(patient, status, message)
        self.summary.failed += 1


def run_scoring(
    *,
    patients: Sequence[PatientInput],
    predict: PredictFn,
    output: Path,
    fmt: str,
    model_id: str,
    model_sha256: str = "",
    errors_path: Path | None = None,
    workers: int = 4,
    progress: bool = True,
) -> ScoreSummary:
    """Score every patient not already in `output`; returns counts; OutputError if unusable."""
    start = time.monotonic()
    todo = pending_patients(patients, output, fmt, model_id)
    summary = ScoreSummary(total=len(patients), skipped=len(patients) - len(todo))
    bar = tqdm(total=len(todo), unit="patient", file=sys.stderr, disable=not progress, desc="scoring")
    run = _Run(RowWriter(output, fmt), _Errors(errors_path or default_errors_path(output)), summary, bar,
               model_id, model_sha256)  # fmt: skip
    try:
        ready = []
        for patient in todo:
            missing = [f.name for f in patient.files if not f.is_file()]
            if missing:
                run.fail(patient, 0, f"file not found: {', '.join(missing)}")
                bar.update(1)
            else:
                ready.append(patient)
        _score_pool(ready, predict, run, max(1, workers))
    finally:
        bar.close()
        run.rows.close()
        run.errors.close()
        summary.elapsed_s = time.monotonic() - start
    return summary


def _score_pool(todo: list[PatientInput], predict: PredictFn, run: _Run, workers: int) -> None:
    """Keep at most 2·workers requests in flight; write each finished patient as it completes."""
    queue = list(reversed(todo))
    inflight: dict[Future, PatientInput] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="steph-score") as pool:
        try:
            while queue or inflight:
                while queue and len(inflight) < 2 * workers and run.summary.aborted is None:
                    patient = queue.pop()
                    inflight[pool.submit(predict, patient)] = patient
                if not inflight:
                    break
                finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for future in finished:
                    _record(inflight.pop(future), future, run)
                    run.bar.update(1)
                    run.bar.set_postfix(failed=run.summary.failed, refresh=False)
        finally:
            for future in inflight:
                future.cancel()


def _record(patient: PatientInput, future: Future, run: _Run) -> None:
    """Write one finished patient: its row, or its error; auth failures and a down service abort the run."""
    summary = run.summary
    try:
        pred = future.result()
        row = build_row(pred, patient_id=patient.patient_id, model_id=run.model_id,
                        model_sha256=run.model_sha256, scored_at=utc_now())  # fmt: skip
    except (AuthError, ConnectionFailed) as exc:
        _abort(summary, exc)
        return
    except ClientError as exc:
        if exc.status in SERVICE_DOWN:
            _abort(summary, exc)
            return
        run.fail(patient, exc.status, exc.message)
        return
    except (ValueError, OSError) as exc:
        run.fail(patient, 0, str(exc))
        return
    run.rows.write(row)
    summary.scored += 1


def _abort(summary: ScoreSummary, exc: ClientError) -> None:
    """Stop submitting (auth refused, service down); the first reason wins."""
    if summary.aborted is None:
        summary.aborted, summary.abort_status = (
            f"HTTP {exc.status}: {exc.message}" if exc.status else exc.message,
            exc.status,
        )
