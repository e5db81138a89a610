"""Garbage collection (app/services/gc.py, issue 9) over the S3 adapter: the same primitives as the local store
(list_keys, modified_at, size, delete, list_cohort_ids, cohort_modified_at, delete_cohort) against a real
S3-compatible server; referenced objects stay, unreferenced ones go only past the grace period."""

from __future__ import annotations

import pytest

from tests.fixtures import make_tiny_world
from tests.workers.world import make_ctx, register_family


@pytest.fixture
def s3_ctx(tmp_path, s3_server, s3_bucket, monkeypatch):
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)  # boto3's credential chain
    ctx = make_ctx(tmp_path, store="s3", s3_bucket=s3_bucket, s3_endpoint_url=s3_server.endpoint_url, gc_grace_s=3600)
    yield ctx
    ctx.close()


def test_gc_removes_only_unreferenced_objects_and_cohorts_from_the_bucket(s3_ctx, tmp_path) -> None:
    gc = pytest.importorskip("app.services.gc")
    store = s3_ctx.store
    register_family(s3_ctx, make_tiny_world(tmp_path / "world"))
    referenced = set(store.list_keys())
    orphan = store.put_bytes(b"an artifact whose row was never committed")
    work = store.new_tmp_path()
    work.mkdir()
    (work / "labels.csv").write_text("case_id,slide_id,time,event\n")
    store.add_cohort_dir(work, "coh_orphan")

    young = gc.collect_garbage(ctx=s3_ctx, dry_run=False)  # grace 3600 s: everything is too young to go
    assert young["objects"] == [] and young["cohort_dirs"] == [] and orphan in set(store.list_keys())

    s3_ctx.settings.gc_grace_s = 0
    report = gc.collect_garbage(ctx=s3_ctx, dry_run=True)
    assert [o["key"] for o in report["objects"]] == [orphan] and report["cohort_dirs"] == ["coh_orphan"]
    assert report["bytes"] == len(b"an artifact whose row was never committed")
    assert set(store.list_keys()) == referenced | {orphan}  # a dry run changes nothing
    gc.collect_garbage(ctx=s3_ctx, dry_run=False)
    assert set(store.list_keys()) == referenced and store.list_cohort_ids() == []
    for key in referenced:
        store.verify(key)  # still there and intact
