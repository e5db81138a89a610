"""S3ArtifactStore against a real S3-compatible server process (moto server mode): content addressing, verified
reads on an empty scratch directory, streamed multipart upload, atomic publish (a failed or changed upload
leaves nothing visible), corruption detection, cohorts as objects, cache trimming, and the same GC primitives
as the local store."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from app.storage import open_store
from app.storage.s3 import S3ArtifactStore
from app.storage.s3_io import upload_verified
from app.storage.store import ArtifactStore, StoreError, StoreUnavailable

MIB = 1 << 20


def make_store(server, bucket: str, scratch: Path, **kw) -> S3ArtifactStore:
    return S3ArtifactStore(scratch, bucket=bucket, client=server.client(), **kw)


def pending_uploads(client, bucket: str) -> list:
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


@pytest.fixture(params=["local", "s3"])
def any_store(request, tmp_path) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(tmp_path / "local")
    server = request.getfixturevalue("s3_server")
    return make_store(server, request.getfixturevalue("s3_bucket"), tmp_path / "scratch")


def test_gc_primitives_are_the_same_on_both_adapters(any_store, tmp_path) -> None:
    shas = [any_store.put_bytes(b"first object"), any_store.put_bytes(b"second, longer object")]
    assert shas[0] == hashlib.sha256(b"first object").hexdigest()
    assert sorted(any_store.list_keys()) == sorted(shas) and any_store.count_objects() == 2
    assert any_store.size(shas[1]) == len(b"second, longer object") and any_store.size("0" * 64) is None
    assert any_store.delete(shas[0]) is True and any_store.delete(shas[0]) is False
    assert list(any_store.list_keys()) == [shas[1]] and not any_store.exists(shas[0])
    with pytest.raises(StoreError, match="missing"):
        any_store.verify(shas[0])
    assert any_store.read_verified(shas[1]) == b"second, longer object"
    assert list(any_store.tmp_dir().iterdir()) == []
    assert any_store.modified_at(shas[0]) is None and abs(any_store.modified_at(shas[1]) - time.time()) < 60


def test_storing_known_bytes_again_refreshes_their_time(any_store) -> None:
    """GC spares objects younger than its grace period: a re-registration must make an old object young."""
    sha = any_store.put_bytes(b"weights stored twice")
    first = any_store.modified_at(sha)
    time.sleep(1.2)  # S3's LastModified has one-second resolution
    assert any_store.put_bytes(b"weights stored twice") == sha and any_store.count_objects() == 1
    assert any_store.modified_at(sha) >= first + 1


def test_a_process_with_an_empty_scratch_dir_reads_verified_objects(s3_server, s3_bucket, tmp_path) -> None:
    writer = make_store(s3_server, s3_bucket, tmp_path / "a")
    src = tmp_path / "model.safetensors"
    src.write_bytes(os.urandom(3000))
    sha = writer.put_file(src, move=True)
    assert not src.exists() and writer.path(sha).is_file()  # moved into the writer's cache
    reader = make_store(s3_server, s3_bucket, tmp_path / "b")
    local = reader.root / "objects" / sha[:2] / f"{sha}.safetensors"
    assert not local.exists()
    assert reader.verify(sha) == local and hashlib.sha256(local.read_bytes()).hexdigest() == sha
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=reader.object_key(sha))
    assert head["Metadata"]["sha256"] == sha and head["ContentLength"] == 3000


def test_large_objects_go_up_in_parts(s3_server, s3_bucket, tmp_path) -> None:
    store = make_store(s3_server, s3_bucket, tmp_path / "s", part_size=5 * MIB)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * MIB + 17))  # 3 parts: 5 + 5 + 1 MiB
    calls: list[int] = []
    store.client.meta.events.register(
        "provide-client-params.s3.UploadPart", lambda params, **_: calls.append(len(params["Body"]))
    )
    sha = store.put_file(src)
    assert calls == [5 * MIB, 5 * MIB, MIB + 17]
    fresh = make_store(s3_server, s3_bucket, tmp_path / "t")
    assert fresh.size(sha) == 11 * MIB + 17 and hashlib.sha256(fresh.verify(sha).read_bytes()).hexdigest() == sha


def test_an_upload_failing_mid_way_leaves_nothing_visible(s3_server, s3_bucket, tmp_path) -> None:
    store = make_store(s3_server, s3_bucket, tmp_path / "s", part_size=5 * MIB)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * MIB))
    sent: list[int] = []

    def fail_second_part(params, **_):
        sent.append(params["PartNumber"])
        if params["PartNumber"] == 2:
            raise ConnectionResetError("network dropped mid-upload")

    store.client.meta.events.register("provide-client-params.s3.UploadPart", fail_second_part)
    with pytest.raises(ConnectionResetError):
        store.put_file(src)
    assert sent == [1, 2]
    assert list(store.list_keys()) == [] and pending_uploads(store.client, s3_bucket) == []  # aborted
    assert list(store.tmp_dir().iterdir()) == [] and src.exists()


@pytest.mark.parametrize("size", [1000, 6 * MIB])
def test_bytes_that_do_not_match_their_sha256_are_never_published(s3_server, s3_bucket, tmp_path, size) -> None:
    client = s3_server.client()
    src = tmp_path / "changed.bin"
    src.write_bytes(os.urandom(size))
    claimed = hashlib.sha256(b"what the file held when it was hashed").hexdigest()
    with pytest.raises(StoreError, match="changed while being stored"):
        upload_verified(
            client, s3_bucket, f"objects/{claimed[:2]}/{claimed}.safetensors", src, claimed, part_size=5 * MIB
        )
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    assert pending_uploads(client, s3_bucket) == []


def test_a_corrupt_object_in_the_bucket_is_refused(s3_server, s3_bucket, tmp_path) -> None:
    sha = make_store(s3_server, s3_bucket, tmp_path / "a").put_bytes(b"original weights")
    reader = make_store(s3_server, s3_bucket, tmp_path / "b")
    s3_server.client().put_object(Bucket=s3_bucket, Key=reader.object_key(sha), Body=b"tampered weights")
    with pytest.raises(StoreError, match="corrupt"):
        reader.verify(sha)
    assert not (reader.root / "objects" / sha[:2]).exists() and list(reader.tmp_dir().iterdir()) == []


def test_a_damaged_cache_copy_is_fetched_again(s3_server, s3_bucket, tmp_path) -> None:
    store = make_store(s3_server, s3_bucket, tmp_path / "a")
    sha = store.put_bytes(b"good bytes")
    store.path(sha).write_bytes(b"bit rot")
    assert store.read_verified(sha) == b"good bytes"


def test_cohorts_travel_as_verified_objects(s3_server, s3_bucket, tmp_path) -> None:
    api = make_store(s3_server, s3_bucket, tmp_path / "api")
    work = api.new_tmp_path()
    (work / "bags").mkdir(parents=True)
    (work / "labels.csv").write_text("case_id,slide_id,time,event\nP1,S1,10,1\n")
    (work / "bags" / "S1.npy").write_bytes(b"\x93NUMPY fake")
    api.add_cohort_dir(work, "coh_1")
    assert api.count_cohorts() == 1 and list(api.list_keys()) == []  # not among the objects
    worker = make_store(s3_server, s3_bucket, tmp_path / "worker")
    assert worker.list_cohort_ids() == ["coh_1"] and abs(worker.cohort_modified_at("coh_1") - time.time()) < 60
    assert worker.cohort_modified_at("coh_2") is None and not (tmp_path / "worker" / "cohorts").exists()
    got = worker.cohort_dir("coh_1")
    assert (got / "labels.csv").read_text() == (api.cohort_dir("coh_1") / "labels.csv").read_text()
    assert (got / "bags" / "S1.npy").read_bytes() == b"\x93NUMPY fake"
    s3_server.client().put_object(
        Bucket=s3_bucket, Key=api.cohort_key("coh_1"), Body=b"not the tar", Metadata={"sha256": "0" * 64}
    )
    with pytest.raises(StoreError, match="corrupt"):
        make_store(s3_server, s3_bucket, tmp_path / "other").cohort_dir("coh_1")
    assert not worker.cohort_dir("coh_missing").exists()
    api.delete_cohort("coh_1")
    assert api.count_cohorts() == 0 and not (tmp_path / "api" / "cohorts" / "coh_1").exists()


def test_the_cache_keeps_the_most_recently_used_objects(s3_server, s3_bucket, tmp_path) -> None:
    shas = [make_store(s3_server, s3_bucket, tmp_path / "w").put_bytes(bytes([i]) * 1000) for i in range(3)]
    store = make_store(s3_server, s3_bucket, tmp_path / "r", cache_max_bytes=2500)
    for sha in shas:
        store.verify(sha)
    cached = {p.name[:64] for p in (store.root / "objects").glob("*/*")}
    assert cached == set(shas[1:])  # 3 × 1000 B > 2500 B: the least recently used went


def test_clear_tmp_aborts_stale_multipart_uploads(s3_server, s3_bucket, tmp_path) -> None:
    store = make_store(s3_server, s3_bucket, tmp_path / "s")
    store.client.create_multipart_upload(Bucket=s3_bucket, Key="objects/ab/leftover.safetensors")
    # moto reports every upload as initiated in 2010: younger than 1e10 s, older than an hour
    assert store.clear_tmp(older_than_s=1e10) == 0 and len(pending_uploads(store.client, s3_bucket)) == 1
    assert store.clear_tmp(older_than_s=3600) == 1 and pending_uploads(store.client, s3_bucket) == []


def test_an_unreachable_or_missing_bucket_is_a_store_unavailable(s3_server, tmp_path) -> None:
    from app.storage.s3 import make_client
    from tests.fixtures import free_port

    dead = S3ArtifactStore(
        tmp_path / "s",
        bucket="b",
        client=make_client(endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1"),
    )
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        dead.exists("a" * 64)
    assert dead.is_writable() is False
    nobucket = make_store(s3_server, "no-such-bucket", tmp_path / "t")
    with pytest.raises(StoreUnavailable, match="NoSuchBucket"):
        nobucket.put_bytes(b"x")
    assert nobucket.is_writable() is False and list(nobucket.tmp_dir().iterdir()) == []


def test_open_store_follows_the_settings(s3_server, s3_bucket, tmp_path, monkeypatch) -> None:
    from app.settings import Settings

    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)  # boto3's standard credential chain
    local = open_store(Settings(home=tmp_path / "h1"))
    assert type(local) is ArtifactStore and local.root == (tmp_path / "h1" / "models_store").resolve()
    s3 = open_store(
        Settings(
            home=tmp_path / "h2",
            store="s3",
            s3_bucket=s3_bucket,
            s3_endpoint_url=s3_server.endpoint_url,
            s3_prefix="/p/q/",
        )
    )
    assert isinstance(s3, S3ArtifactStore) and s3.prefix == "p/q/" and s3.is_writable()
    sha = s3.put_bytes(b"under a prefix")
    assert s3.object_key(sha) == f"p/q/objects/{sha[:2]}/{sha}.safetensors" and list(s3.list_keys()) == [sha]
    with pytest.raises(ValueError, match="STEPH_S3_BUCKET"):
        open_store(Settings(home=tmp_path / "h3", store="s3"))
