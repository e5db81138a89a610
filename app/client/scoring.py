"""Batch scoring engine: many patients → `POST /predict` on a thread pool → one resumable output file.

Workers only call `predict(patient)`; the calling thread is the single writer (rows and errors), so lines
never interleave. Input errors (4xx other than 401/403/429), a 500 that persisted after every retry, and
inputs that cannot be sent (`inputs.input_problem`: a patient id with a control character; a missing, broken,
empty or unreadable file) go to the errors file and the run goes on; auth errors and an unreachable or
overloaded server (connection errors, 429/502/503/504 after every retry) abort the run (rerun to resume).

The errors file lists the failures of the latest run only — each run retries every unresolved input, so that is
the current list — and is replaced as a whole when the run ends (also when it is interrupted or aborted); a run
that ended early keeps the previous run's failures of the patients it did not get to. No failures: no file.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from app.client.inputs import PatientInput, input_problem, names_text, printable
from app.client.outputs import (
    OutputError,
    RowWriter,
    build_row,
    error_row,
    read_done,
    read_errors,
    repair_partial_line,
    write_errors,
)
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
    not_bags: list[str] = field(default_factory=list)  # files of the input folder skipped as not bags
    errors_listed: int = 0  # rows in the errors file after the run

    def text(self) -> str:
        line = (
            f"scored {self.scored}, skipped {self.skipped} (already in output), failed {self.failed}, "
            f"of {self.total} patients in {self.elapsed_s:.1f}s"
        )
        if self.not_bags:
            n = len(self.not_bags)
            what = "file that is not a bag" if n == 1 else "files that are not bags"
            line += f"; skipped {n} {what}: {names_text(self.not_bags)}"
        return line + (f"; ABORTED: {self.aborted}" if self.aborted else "")


def utc_now() -> str:
    """UTC ISO-8601 with a Z suffix and second precision, e.g. 2026-11-27T00:12:03Z."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def default_errors_path(output: Path) -> Path:
    """`scores.csv` → `scores.errors.csv`; any other suffix keeps the whole name: `scores.jsonl` →
    `scores.jsonl.errors.csv`, so outputs of different formats sharing a stem never share an errors file."""
    if output.suffix.lower() == ".csv":
        return output.with_name(f"{output.stem}.errors.csv")
    return output.with_name(f"{output.name}.errors.csv")


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
    summary: ScoreSummary
    bar: tqdm
    model_id: str
    model_sha256: str
    errors: list[dict] = field(default_factory=list)  # this run's failures, in the order they happened
    resolved: set[str] = field(default_factory=set)  # patient ids scored or failed in this run
    root_misses: int = 0  # server-path bags the server did not find under its data root, before any success

    def fail(self, patient: PatientInput, status: int, message: str) -> None:
        self.errors.append(error_row(patient.patient_id, patient.files_text(), status, message, utc_now()))
        self.resolved.add(patient.patient_id)
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
    not_bags: Sequence[str] = (),
) -> ScoreSummary:
    """Score every patient not already in `output`; returns counts; OutputError if unusable.

    `not_bags` (names of the input folder's files that are not bags) only goes into the summary line."""
    start = time.monotonic()
    errors_path = errors_path or default_errors_path(output)
    if errors_path.resolve() == output.resolve():
        raise OutputError(f"the errors file and the output are the same file ({output}); choose another --errors")
    todo = pending_patients(patients, output, fmt, model_id)
    previous = read_errors(errors_path)  # refuses a file that is not an errors file before anything is written
    summary = ScoreSummary(total=len(patients), skipped=len(patients) - len(todo), not_bags=list(not_bags))
    bar = tqdm(total=len(todo), unit="patient", file=sys.stderr, disable=not progress, desc="scoring")
    run = _Run(RowWriter(output, fmt), summary, bar, model_id, model_sha256)
    finished = False
    try:
        ready = []
        for patient in todo:
            problem = input_problem(patient)
            if problem:
                run.fail(patient, 0, problem)
                bar.update(1)
            else:
                ready.append(patient)
        _score_pool(ready, predict, run, max(1, workers))
        finished = True
    finally:
        bar.close()
        run.rows.close()
        summary.elapsed_s = time.monotonic() - start
        try:
            summary.errors_listed = _rewrite_errors(errors_path, run, todo, previous)
        except OSError as exc:
            if finished:
                raise
            print(f"steph-client: warning: could not rewrite {errors_path}: {exc}", file=sys.stderr)
    return summary


def _rewrite_errors(path: Path, run: _Run, todo: Sequence[PatientInput], previous: list[dict]) -> int:
    """The errors file after a run: this run's failures, plus the previous run's failures of patients this run
    did not get to (it was interrupted or aborted); nothing of patients scored or no longer in the input."""
    untried = {printable(p.patient_id) for p in todo if p.patient_id not in run.resolved}
    carried = {r["patient_id"]: r for r in previous if r["patient_id"] in untried}
    rows = run.errors + list(carried.values())
    write_errors(path, rows)
    return len(rows)


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
        if exc.status == 422 and ROOT_MISS in exc.message and summary.scored == 0:
            run.root_misses += 1
            if run.root_misses >= ROOT_MISSES_TO_STOP:  # every bag so far: a setting, not the bags
                _abort(summary, ClientError(400, (
                    f"the server found none of the first {run.root_misses} bags under its data root: check "
                    "--server-root (this machine's mount of the server's STEPH_DATA_ROOT) and that the bags lie "
                    "under it"
                )))  # fmt: skip
        return
    except (ValueError, OSError) as exc:
        run.fail(patient, 0, str(exc))
        return
    run.rows.write(row)
    run.resolved.add(patient.patient_id)
    summary.scored += 1


ROOT_MISS = "no bag file at that path under the data root"  # the server's 422 for --server-paths (services.predict)
ROOT_MISSES_TO_STOP = 5


def _abort(summary: ScoreSummary, exc: ClientError) -> None:
    """Stop submitting (auth refused, service down); the first reason wins."""
    if summary.aborted is None:
        summary.aborted, summary.abort_status = (
            f"HTTP {exc.status}: {exc.message}" if exc.status else exc.message,
            exc.status,
        )
