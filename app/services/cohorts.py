"""Cohorts: a target cancer's labeled patients (labels.csv, splits.csv, bags), validated at registration.

Two ways in: an uploaded zip/tar (extracted safely into the store under the cohort's generated id) or, for
an admin, a server-side directory under `settings.data_root` (used in place; large cohorts never travel over
HTTP). Every bag is read and checked (D matches the base, finite, non-empty); nothing is stored when
validation fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from app.db import repositories as repo
from app.db.models import Cohort
from app.services.archives import ARCHIVE_SUFFIXES, extract_archive
from app.services.bases import get_base
from app.services.context import ServiceContext
from app.services.errors import Forbidden, InvalidInput, not_found
from app.services.uploads import SavedUpload


def validate_cohort_dir(directory: Path, expected_dim: int, display_name: str | None = None, *,
                        confine_to: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """open_cohort(directory, confine_to=…).validate(D).to_dict(); raises app.io.errors.InputFileError listing
    the problems (a PathEscapeError when a file links outside `confine_to`)."""
    from app.io.cohort import open_cohort

    cohort = open_cohort(directory, display_name=display_name, confine_to=confine_to)
    return cohort.validate(expected_dim).to_dict()


def _validate_and_prune(root: Path, dim: int, name: str, work: Path) -> dict[str, Any]:
    """Validate an extracted archive, then drop the bag files labels.csv does not name: the store keeps what the
    cohort uses (an archive of a whole slide folder for a few labelled patients would otherwise be kept whole). A
    cohort registered by path is the user's directory and is never pruned."""
    from app.io.cohort import open_cohort

    cohort = open_cohort(root, display_name=name, confine_to=work)
    summary = cohort.validate(dim).to_dict()
    unused = cohort.unreferenced_bag_files()
    for path in unused:
        path.unlink(missing_ok=True)
    if unused:
        summary["warnings"] = [w for w in summary["warnings"] if "not referenced by" not in w] + [
            f"{len(unused)} bag file(s) that labels.csv does not name were not kept, e.g. {unused[0].name!r}"
        ]
    return summary


def register_cohort_upload(ctx: ServiceContext, *, upload: SavedUpload, suffix: str, name: str, base_id: str) -> Cohort:
    """Extract the archive to a temp dir, validate against the base's D, then move it to cohorts/<id>."""
    if suffix not in ARCHIVE_SUFFIXES:
        raise InvalidInput(f"unsupported archive type {suffix!r}; use one of {', '.join(ARCHIVE_SUFFIXES)}")
    base = get_base(ctx, base_id=base_id)
    work = ctx.store.new_tmp_path()
    work.mkdir()
    try:
        s = ctx.settings
        root = extract_archive(
            upload.path, suffix, work, max_bytes=int(s.max_archive_mb * 2**20), max_files=s.max_archive_files
        )
        summary = _validate_and_prune(root, int(base.dims["in_dim"]), name, work)
        cohort_id = repo.new_id("coh")
        ctx.store.add_cohort_dir(root, cohort_id)  # the S3 store also publishes it for remote workers
        try:
            with ctx.session() as session:
                return repo.add_cohort(
                    session,
                    id=cohort_id,
                    base_id=base.id,
                    name=name,
                    source="upload",
                    location=f"cohorts/{cohort_id}",
                    summary=summary,
                )
        except BaseException:
            ctx.store.delete_cohort(cohort_id)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def resolve_data_path(data_root: Path | None, path: str) -> Path:
    """`path` (absolute, or relative to the data root) resolved with symlinks; it must be a directory
    inside the data root. Forbidden when server paths are disabled or the path escapes the root; InvalidInput
    otherwise."""
    resolved = resolve_under_root(data_root, path, what="cohort")
    from app.io.safe_paths import is_dir

    if not is_dir(resolved):
        raise InvalidInput(
            "the given path is not a directory under the data root; give the cohort directory "
            "that holds labels.csv and splits.csv"
        )
    return resolved


def resolve_under_root(data_root: Path | None, path: str, *, what: str) -> Path:
    """`path` (absolute, or relative to the data root) resolved with symlinks, confined to the data root:
    Forbidden when server paths are disabled (no STEPH_DATA_ROOT) or the path escapes the root, InvalidInput
    for an unusable path. `what` names the thing in the messages ("cohort", "bag")."""
    if data_root is None:
        raise Forbidden(
            f"server-side {what} paths are disabled on this server; set STEPH_DATA_ROOT to the "
            f"directory that holds them, or upload the {what} instead"
        )
    from app.io.safe_paths import PathEscapeError, check_path_text

    if not path or "\x00" in path:
        raise InvalidInput(f"a {what} path must be a non-empty path")
    try:
        check_path_text(path, what="path")
        candidate = Path(path).expanduser()
        resolved = (candidate if candidate.is_absolute() else data_root / candidate).resolve()
    except PathEscapeError as exc:
        raise InvalidInput(str(exc)) from None
    except (OSError, RuntimeError, ValueError):
        raise InvalidInput("the given path cannot be resolved (a link loop or an invalid path); fix it") from None
    real_root = data_root.resolve()
    if resolved != real_root and not resolved.is_relative_to(real_root):
        raise Forbidden(
            f"the given path lies outside the server's data root (STEPH_DATA_ROOT); {what} files must be placed "
            "under it"
        )
    return resolved


def register_cohort_path(ctx: ServiceContext, *, path: str, name: str, base_id: str) -> Cohort:
    """Validate a directory under the data root in place and record it (nothing is copied)."""
    base = get_base(ctx, base_id=base_id)
    directory = resolve_data_path(ctx.settings.data_root, path)
    summary = validate_cohort_dir(
        directory, int(base.dims["in_dim"]), display_name=name, confine_to=ctx.settings.data_root
    )
    with ctx.session() as session:
        return repo.add_cohort(
            session, base_id=base.id, name=name, source="path", location=str(directory), summary=summary
        )


def get_cohort(ctx: ServiceContext, *, cohort_id: str) -> Cohort:
    with ctx.session() as s:
        row = repo.get_cohort(s, cohort_id=cohort_id)
    if row is None:
        raise not_found("cohort", cohort_id, hint="list them with GET /cohorts")
    return row


def list_cohorts(
    ctx: ServiceContext, *, base_id: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[Cohort], int]:
    with ctx.session() as s:
        return repo.list_cohorts(s, base_id=base_id, limit=limit, offset=offset)


def cohort_directory(ctx: ServiceContext, cohort: Cohort) -> Path:
    """Where a cohort's files are: the store dir of an upload, or the recorded data-root path."""
    return ctx.store.cohort_dir(cohort.id) if cohort.source == "upload" else Path(cohort.location)


def open_registered_cohort(ctx: Any, *, source: str, location: str, directory: Path, name: str) -> Any:
    """Open a registered cohort for a job, re-checking its confinement (a dir replaced by a link after
    registration is refused with a PathEscapeError): a `path` cohort must still resolve inside STEPH_DATA_ROOT;
    with no data root configured (any more), inside its own recorded directory, which must still be a real
    directory at that place (not a link); an upload inside its store directory."""
    from app.io.cohort import open_cohort
    from app.io.safe_paths import PathEscapeError

    root = getattr(ctx.settings, "data_root", None) if source == "path" else None
    if root is not None:
        return open_cohort(directory, confine_to=root)  # errors name the directory, as before
    if os.path.realpath(directory) != os.path.normpath(directory):
        raise PathEscapeError(
            f"{name}: the cohort directory was replaced by a link after registration; restore it or register "
            "the cohort again",
            file_name=name,
        )
    return open_cohort(directory, confine_to=directory)
