"""Issue 8: a mutated cohort archive registered through the service is either a cohort or a clean 4xx — and a
refused one leaves nothing behind (no row, no directory under cohorts/, nothing in tmp/)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.db import repositories as repo
from app.io.errors import InputFileError
from app.services.cohorts import register_cohort_upload
from app.services.errors import ServiceError
from app.services.uploads import SavedUpload
from tests.fixtures import make_tiny_world
from tests.security.test_files_fuzz import mutate
from tests.workers.world import make_ctx, register_family


def _cohort_tar(cohort: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for p in sorted(cohort.rglob("*")):
            if p.is_file() and (p.suffix != ".h5" or p.stem in ("S000", "S001", "S002")):
                tf.add(p, arcname=f"c/{p.relative_to(cohort).as_posix()}")
    return buf.getvalue()


def test_mutated_cohort_archives_store_nothing_when_refused(tmp_path: Path) -> None:
    world = make_tiny_world(tmp_path / "world")
    (world.cohort / "labels.csv").write_text(
        "patient_id,pathology_id,t,e\nP0,S000,100,1\nP1,S001,200,0\nP2,S002,300,1\n"
    )
    (world.cohort / "splits.csv").unlink()
    base = _cohort_tar(world.cohort)
    ctx = make_ctx(tmp_path, data_root=tmp_path)
    fam = register_family(ctx, world)
    outcomes: list[str] = []
    try:

        @settings(max_examples=int(os.environ.get("STEPH_FUZZ_EXAMPLES", "0")) or 25, deadline=None,
                  derandomize=True, database=None, suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(data=st.one_of(st.just(base), mutate(base)))
        def run(data: bytes) -> None:
            path = ctx.store.new_tmp_path(".tar.gz")
            path.write_bytes(data)
            upload = SavedUpload(path, len(data), hashlib.sha256(data).hexdigest(), "cohort.tar.gz")
            with ctx.session() as s:
                before = repo.list_cohorts(s)[1]
            try:
                register_cohort_upload(ctx, upload=upload, suffix=".tar.gz", name="fuzz", base_id=fam["base_id"])
                outcomes.append("stored")
            except (ServiceError, InputFileError) as exc:
                assert len(str(exc)) > 20 and str(tmp_path) not in str(exc), str(exc)
                with ctx.session() as s:
                    assert repo.list_cohorts(s)[1] == before
                outcomes.append("refused")
            finally:
                path.unlink(missing_ok=True)
            assert [p for p in (ctx.store.root / "tmp").iterdir()] == []

        run()
        with ctx.session() as s:
            rows = repo.list_cohorts(s)[0]
        stored = [r for r in rows if r.source == "upload"]
        assert len(stored) == outcomes.count("stored") >= 1  # the unmutated archive registers
        on_disk = {p.name for p in (ctx.store.root / "cohorts").iterdir()}
        assert on_disk == {r.id for r in stored}
        assert outcomes.count("refused") >= 5
    finally:
        ctx.close()
