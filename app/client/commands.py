"""Implementations of the `steph-client` sub-commands (argument parsing lives in `cli.py`).

Each takes the parsed args and a connected `Client`, prints JSON on stdout (never the key), and returns
the exit code: 0 success, 1 some work failed, 2 usage/config/auth error, 3 service unreachable.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from app.client.inputs import PatientInput, relative_names, scan_inputs
from app.client.lock import exclusive
from app.client.outputs import OutputError, format_for
from app.client.scoring import default_errors_path, run_scoring
from app.client.sdk import Client
from app.client.transport import ClientError
from app.client.types import MergeJob

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def emit(obj: Any) -> None:
    """Print a result as JSON on stdout (dataclasses print their full server JSON)."""
    if isinstance(obj, list):
        obj = [getattr(o, "raw", o) for o in obj]
    print(json.dumps(getattr(obj, "raw", obj), indent=2, default=str))


def cmd_health(args: argparse.Namespace, client: Client) -> int:
    health = client.health()
    emit(health)
    return EXIT_OK if health.ok else EXIT_FAILED


def cmd_score(args: argparse.Namespace, client: Client) -> int:
    output = Path(args.output)
    fmt = format_for(output, args.format)
    errors_path = Path(args.errors) if args.errors else default_errors_path(output)
    if errors_path.resolve() == output.resolve():
        raise OutputError(f"--errors and --output name the same file ({output}); choose another --errors")
    # One run per output (and errors file) at a time, from before anything is read until every exit path.
    with exclusive(output), exclusive(errors_path, "the errors file"):
        return _score_locked(args, client, output, fmt, errors_path)


def _score_locked(args: argparse.Namespace, client: Client, output: Path, fmt: str, errors_path: Path) -> int:
    source = Path(args.input)
    patients, not_bags = scan_inputs(source)
    try:
        model = client.get_model(args.model)
    except ClientError as exc:
        if not exc.is_input_error:
            raise
        raise ValueError(f"model {args.model!r}: {exc.message} (see `steph-client models`)") from None

    server_root = Path(args.server_root).resolve() if getattr(args, "server_root", None) else None
    server_paths = bool(getattr(args, "server_paths", False)) or server_root is not None

    def predict(patient: PatientInput):
        if not server_paths:
            return client.predict_patient(model.id, patient.patient_id, patient.files)
        paths = [server_path(f, server_root) for f in patient.files]
        (result,) = client.predict_paths(model.id, paths, patient_id=patient.patient_id)
        return replace(result, patient_id=patient.patient_id)

    summary = run_scoring(
        patients=patients,
        predict=predict,
        output=output,
        fmt=fmt,
        model_id=model.id,
        model_sha256=model.artifact_sha256,
        errors_path=errors_path,
        workers=args.workers,
        progress=not args.quiet,
        not_bags=relative_names(not_bags, source),
    )
    print(summary.text() + (f"; errors in {errors_path}" if summary.errors_listed else ""), file=sys.stderr)
    return exit_code(summary)


def exit_code(summary: Any) -> int:
    """2 for a run stopped by a setting (auth, a wrong --server-root), 3 when the service was unreachable, 1 when
    some patients failed, else 0."""
    if summary.aborted:
        return EXIT_USAGE if summary.abort_status in (400, 401, 403) else EXIT_UNREACHABLE
    return EXIT_FAILED if summary.failed else EXIT_OK


def server_path(path: Path, server_root: Path | None) -> str:
    """A local bag path as the server should see it: relative to `server_root` (the local mount of the server's
    STEPH_DATA_ROOT) when given, else the absolute path (the same mount on both machines)."""
    resolved = path.resolve()
    if server_root is None:
        return str(resolved)
    if not resolved.is_relative_to(server_root):
        raise ValueError(f"{path} is not under --server-root {server_root}; the server can only read its data root")
    return resolved.relative_to(server_root).as_posix()


def cmd_register_base(args: argparse.Namespace, client: Client) -> int:
    base = client.register_base(args.file, name=args.name, encoder=args.encoder)
    if (base.name, base.encoder) != (args.name, args.encoder):  # the same bytes were registered before
        print(f"note: {Path(args.file).name} is already registered as base {base.id} (name {base.name!r}, encoder "
              f"{base.encoder!r}); that base is returned unchanged", file=sys.stderr)  # fmt: skip
    emit(base)
    return EXIT_OK


def read_mapping(path: Path) -> dict[str, str]:
    """A `file,cancer` CSV → {file name or stem: cancer}."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not {"file", "cancer"} <= set(reader.fieldnames or []):
            raise ValueError(f"mapping {path.name} needs columns file,cancer; got {reader.fieldnames}")
        return {Path(r["file"].strip()).name: r["cancer"].strip() for r in reader if r.get("file")}


def cancer_for(path: Path, mapping: dict[str, str]) -> str:
    """The cancer of a checkpoint file: mapping by file name, then by stem, else the stem itself."""
    return mapping.get(path.name) or mapping.get(path.stem) or path.stem


def cmd_register(args: argparse.Namespace, client: Client) -> int:
    mapping = read_mapping(Path(args.mapping)) if args.mapping else {}
    done, failed = [], 0
    for raw in args.files:
        path = Path(raw)
        try:
            done.append(client.register_checkpoint(path, cancer=cancer_for(path, mapping), base_id=args.base))
        except ClientError as exc:
            if not exc.is_input_error:
                raise
            failed += 1
            print(f"error: {path.name}: {exc}", file=sys.stderr)
    emit(done)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_register_cohort(args: argparse.Namespace, client: Client) -> int:
    if args.server_path:
        emit(client.register_cohort_path(args.server_path, name=args.name, base_id=args.base))
    elif args.path:
        emit(client.register_cohort(args.path, name=args.name, base_id=args.base))
    else:
        raise ValueError("give a cohort directory / archive, or --server-path for a directory on the server")
    return EXIT_OK


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """["epochs=3", "k=2", "tag=x"] → {"epochs": 3, "k": 2, "tag": "x"} (JSON values when possible)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param must look like name=value, got {pair!r}")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def cmd_merge(args: argparse.Namespace, client: Client) -> int:
    job = client.submit_merge_job(
        args.method,
        base_id=args.base,
        target_checkpoint_id=args.target,
        cohort_id=args.cohort,
        source_checkpoint_ids=args.sources,
        params=parse_params(args.param),
        idempotency_key=args.idempotency_key,
    )
    emit(job)
    return watch_job(client, job.id, poll_s=args.poll, quiet=args.quiet) if args.wait else EXIT_OK


def cmd_watch(args: argparse.Namespace, client: Client) -> int:
    return watch_job(client, args.job_id, poll_s=args.poll, quiet=args.quiet)


def watch_job(client: Client, job_id: str, *, poll_s: float, quiet: bool) -> int:
    """Live progress bar (epoch / step / loss) until the job ends; print the held-out comparison."""
    bar = tqdm(total=None, unit="step", file=sys.stderr, disable=quiet, desc=f"job {job_id[:12]}")

    def on_progress(job: MergeJob) -> None:
        p = job.progress or {}
        total = p.get("total_steps")
        if total and bar.total != total:
            bar.total = int(total)
        if p.get("step") is not None:
            bar.n = int(p["step"])
        loss = p.get("loss")
        epoch = p.get("epoch")
        bar.set_postfix(
            status=job.status,
            epoch=f"{epoch}/{p['epochs']}" if epoch is not None and p.get("epochs") else epoch,
            loss=f"{loss:.4f}" if isinstance(loss, int | float) else loss,
            refresh=False,
        )
        bar.refresh()

    try:
        job = client.wait_for_job(job_id, poll_s=poll_s, on_progress=on_progress)
    finally:
        bar.close()
    emit(
        {
            "id": job.id,
            "status": job.status,
            "model_id": job.model_id,
            "comparison": job.comparison,
            "promotion": (job.raw or {}).get("promotion"),  # the gate: promoted / not_promoted, and why
            "error": job.error,
        }
    )
    return EXIT_OK if job.status == "succeeded" else EXIT_FAILED


def cmd_cancel(args: argparse.Namespace, client: Client) -> int:
    emit(client.cancel_job(args.job_id))
    return EXIT_OK


def cmd_methods(args: argparse.Namespace, client: Client) -> int:
    emit(client.list_methods())
    return EXIT_OK


def cmd_models(args: argparse.Namespace, client: Client) -> int:
    emit(client.get_model(args.model_id) if args.model_id else client.list_models())
    return EXIT_OK


def cmd_download(args: argparse.Namespace, client: Client) -> int:
    print(str(client.download_artifact(args.model_id, args.dest)))
    return EXIT_OK


def cmd_predict(args: argparse.Namespace, client: Client) -> int:
    if args.patient_id:
        results = [client.predict_patient(args.model, args.patient_id, args.files)]
    else:
        predicted = client.predict(args.model, args.files)
        assert isinstance(predicted, list)  # `files` is a list of paths (nargs="+"), never a mapping
        results = predicted
    emit(list(results))
    return EXIT_OK


__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "cancer_for",
    "parse_params",
    "read_mapping",
]


def cmd_validate(args: argparse.Namespace, client: Client | None = None) -> int:
    """Offline: Harrell's C of a scores file against local outcomes (no server, labels stay on site)."""
    from app.client.validate import by_patient, calibration, read_outcomes, read_scores, read_survival, validate

    scores, models = read_scores(args.scores)
    outcomes, slides = read_outcomes(args.labels)
    patients, matched_by = by_patient(scores, outcomes, slides)
    result = validate(patients, outcomes, n_boot=args.bootstrap, seed=args.seed, model_ids=models)
    result.matched_by = matched_by
    survival = {y: by_patient(v, outcomes, slides)[0] for y, v in read_survival(args.scores).items()}
    result.calibration = calibration(survival, outcomes) or None
    if getattr(args, "report", None):  # issue 10: figures for the hospital's own outcomes
        from app.client.validate_report import write_report

        write_report(args.report, patients, outcomes, survival, result, n_groups=args.groups, seed=args.seed,
                     n_boot=args.bootstrap)  # fmt: skip
    emit(result.to_dict())
    if len(models) > 1:
        print(f"steph-client: warning: the scores come from {len(models)} models: {', '.join(models)}",
              file=sys.stderr)  # fmt: skip
    return EXIT_OK
