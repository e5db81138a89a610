"""Helpers for the jobs/models/predict tests: a service context on a temp home, and the tiny family registered
directly through the store and repositories (so these tests do not depend on the upload paths)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from app.db import repositories as repo
from app.db.models import OrmBase
from app.services.context import ServiceContext, build_context
from app.settings import Settings
from tests.fixtures import DIMS, TinyWorld

# one epoch, tiny groups: a STEPH job on the tiny cohort takes well under a second
FAST_PARAMS: dict[str, Any] = {"epochs": 1, "accum": 2, "topk": 2, "hyper_hidden": 8}


class RecordingQueue:
    """A JobQueue that only records ids (the test runs the jobs itself)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()

    def enqueue(self, job_id: str) -> None:
        with self.lock:
            self.ids.append(job_id)

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        return None


def make_ctx(tmp_path: Path, queue: Any = None, **overrides: Any) -> ServiceContext:
    settings = Settings(home=tmp_path / "home", device="cpu", queue="embedded", bootstrap_admin_key=False, **overrides)
    ctx = build_context(settings, queue=queue if queue is not None else RecordingQueue())
    OrmBase.metadata.create_all(ctx.engine)
    from app.db.migrate import stamp_head

    stamp_head(settings.database_url)  # the tables are the newest schema: a server started on this home accepts it
    return ctx


# a ctx fixture parametrised with these runs on SQLite and on a real PostgreSQL server (tests/api/test_postgres.py;
# the module must import its pg_server and pg_url fixtures; skips without the binaries)
BOTH_DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


def ctx_on(request: Any, tmp_path: Path, **overrides: Any) -> ServiceContext:
    """make_ctx on the database of a BOTH_DATABASES parameter."""
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("pg_url")
    return make_ctx(tmp_path, **overrides)


def fake_model(model_id: str, key: str = "3" * 64) -> Any:
    """A model row of add_fake_family's base and checkpoint whose artifact is store object `key` (no file)."""
    from app.db.models import Model

    return Model(id=model_id, method="steph", base_id="base_1", target_checkpoint_id="ckpt_1", params={}, sources=[],
                 provenance={}, artifact_sha256=key, artifact_key=key)  # fmt: skip


def add_fake_family(ctx: ServiceContext, models: int = 0) -> None:
    """Rows only (no store objects): base_1, its checkpoint ckpt_1 and `models` models model_0, model_1, …"""
    from app.db.models import Checkpoint, ModelBase

    with ctx.session() as s:
        s.add(ModelBase(id="base_1", name="b", encoder="e", dims={"in_dim": 16}, bin_edges=[], sha256="0" * 64,
                        artifact_key="0" * 64))  # fmt: skip
        s.flush()
        s.add(Checkpoint(id="ckpt_1", base_id="base_1", cancer="brca", name="brca", sha256="1" * 64,
                         artifact_key="1" * 64, task_vector_key="2" * 64, tv_norms={}))  # fmt: skip
        s.flush()
        s.add_all(fake_model(f"model_{i}") for i in range(models))


def job_cohort(root: Path) -> tuple[Path, Path]:
    """A 12-patient cohort (train 7 / test 5) whose test split has comparable pairs (the fixture's 8-patient
    cohort has none, so the held-out comparison would fail); returns (directory, zip)."""
    from tests.fixtures import write_cohort, zip_dir

    directory = root / "job_cohort"
    if not (directory / "labels.csv").is_file():
        write_cohort(directory, n_patients=12, seed=4)
        zip_dir(directory, root / "job_cohort.zip")
    return directory, root / "job_cohort.zip"


def register_family(ctx: ServiceContext, world: TinyWorld, *, cohort_dir: Path | None = None) -> dict[str, Any]:
    """Base + one checkpoint per cancer + the cohort (by path):
    {"base_id", "ckpt": {cancer: id}, "cohort_id"}."""
    from safetensors.torch import save_file

    from app.domain.survival import default_bin_edges
    from app.domain.task_vectors import compute_task_vector

    def put_state(state: dict) -> str:
        tmp = ctx.store.new_tmp_path(".safetensors")
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        return ctx.store.put_file(tmp, move=True)

    base_key = put_state(world.base_state)
    with ctx.session() as s:
        base = repo.add_base(
            s,
            name="tiny",
            encoder="test-16",
            dims=DIMS.to_dict(),
            bin_edges=default_bin_edges(DIMS.n_bins),
            sha256=base_key,
            artifact_key=base_key,
        )
        ckpt = {}
        for cancer, state in world.checkpoint_states.items():
            key = put_state(state)
            tv_key = put_state(compute_task_vector(state, world.base_state))
            row = repo.add_checkpoint(
                s,
                base_id=base.id,
                cancer=cancer,
                name=cancer,
                sha256=key,
                artifact_key=key,
                task_vector_key=tv_key,
                tv_norms={},
            )
            ckpt[cancer] = row.id
        cohort = repo.add_cohort(
            s,
            base_id=base.id,
            name="brca cohort",
            source="path",
            location=str(cohort_dir or job_cohort(world.root)[0]),
            summary={},
        )
        return {"base_id": base.id, "ckpt": ckpt, "cohort_id": cohort.id}


def job_request(
    fam: dict[str, Any],
    *,
    method: str = "steph",
    target: str = "brca",
    params: dict[str, Any] | None = None,
    sources: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "method": method,
        "base_id": fam["base_id"],
        "target_checkpoint_id": fam["ckpt"][target],
        "source_checkpoint_ids": sources,
        "cohort_id": fam["cohort_id"],
        "params": dict(FAST_PARAMS if params is None else params),
    }
