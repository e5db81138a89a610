"""S3-compatible artifact store (AWS S3, MinIO, Ceph RGW …) with a local scratch cache.

Objects live in the bucket under `<prefix>objects/<aa>/<sha256>.safetensors` (the local layout); uploaded
cohorts as one tar each under `<prefix>cohorts/<cohort_id>.tar` (outside objects/, so garbage collection over
`list_keys()` never sees them). `root` is a local scratch directory with the local store's layout: tmp/ for
uploads in progress, objects/ as a read cache (trimmed to `cache_max_bytes`, least recently used first) and
cohorts/ for extracted cohorts. So `path(sha)` still returns a local file that safetensors can memory-map:
it is downloaded on first use, its sha256 checked while streaming, and renamed into the cache. Any process
with the bucket and the database (API replicas, workers on other machines) sees the same artifacts.

Credentials come from boto3's standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
AWS_PROFILE, an instance role); endpoint, bucket, prefix and region from the settings.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.storage.s3_io import download_verified, is_missing, s3_errors, upload_verified
from app.storage.store import _SAFE_ID, OBJECT_SUFFIX, ArtifactStore, StoreError, sha256_file, writing


def make_client(*, endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 S3 client: path-style addressing when an endpoint is given (MinIO, Ceph), checksums only where the
    API requires them (S3-compatible servers differ; the store checks sha256 itself), bounded retries."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 4, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config
    )


class S3ArtifactStore(ArtifactStore):
    """The ArtifactStore primitives on a bucket; `root` is this process's local scratch directory."""

    kind = "s3"

    def __init__(
        self,
        root: str | Path,
        *,
        bucket: str,
        client: Any,
        prefix: str = "",
        part_size: int = 16 << 20,
        cache_max_bytes: int | None = None,
    ) -> None:
        super().__init__(root)
        if not bucket:
            raise ValueError("STEPH_STORE=s3 needs STEPH_S3_BUCKET (the bucket that holds the artifacts)")
        if part_size < 5 << 20:
            raise ValueError("the multipart part size must be at least 5 MiB (S3's minimum)")
        self.bucket = bucket
        self.client = client
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.part_size = part_size
        self.cache_max_bytes = cache_max_bytes

    @classmethod
    def from_settings(cls, settings: Any) -> S3ArtifactStore:
        client = make_client(endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
        return cls(
            settings.store_root,
            bucket=settings.s3_bucket,
            client=client,
            prefix=settings.s3_prefix,
            part_size=int(settings.s3_part_mb) << 20,
            cache_max_bytes=int(settings.store_cache_mb * 2**20),
        )

    # --- keys -----------------------------------------------------------------------------------------------
    def object_key(self, sha256: str) -> str:
        """The bucket key of object `sha256` (validated)."""
        super().path(sha256)  # raises StoreError for a malformed key
        return f"{self.prefix}objects/{sha256[:2]}/{sha256}{OBJECT_SUFFIX}"

    def cohort_key(self, cohort_id: str) -> str:
        super().cohort_dir(cohort_id)  # raises StoreError for an unsafe id
        return f"{self.prefix}cohorts/{cohort_id}.tar"

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        with s3_errors(self.bucket):
            try:
                return dict(self.client.head_object(Bucket=self.bucket, Key=key))
            except ClientError as exc:
                if is_missing(exc):
                    return None
                raise

    # --- objects --------------------------------------------------------------------------------------------
    def path(self, sha256: str) -> Path:
        """A local copy of object `sha256`, downloaded (sha256 checked) into the cache on first use; the path
        does not exist when the bucket has no such object."""
        local = super().path(sha256)
        if local.is_file():
            with contextlib.suppress(OSError):
                os.utime(local)  # most recently used: trimmed last
            return local
        if download_verified(self.client, self.bucket, self.object_key(sha256), local, self.tmp_dir(), sha256=sha256):
            self._trim_cache(keep=local)
        return local

    def verify(self, sha256: str) -> Path:
        """The local copy after re-hashing it; a damaged cache copy is dropped and fetched once more."""
        try:
            return super().verify(sha256)
        except StoreError:
            local = super().path(sha256)
            if not local.is_file():
                raise
            local.unlink(missing_ok=True)
            return super().verify(sha256)

    def put_file(self, src_path: str | Path, *, move: bool = False) -> str:
        """Upload by content (skipped when the bucket holds it); `move=True` keeps the file as the cache copy."""
        src = Path(src_path)
        sha = sha256_file(src)
        key = self.object_key(sha)
        try:
            head = self._head(key)
            if head is None:
                upload_verified(self.client, self.bucket, key, src, sha, part_size=self.part_size)
            else:
                self._touch(key, head)
            if move:
                self._cache(src, sha)
        finally:
            if move:
                src.unlink(missing_ok=True)
        return sha

    def _touch(self, key: str, head: dict[str, Any]) -> None:
        """Refresh LastModified (a server-side copy onto itself) so garbage collection's grace period spares an
        object that a new row is about to reference again."""
        with s3_errors(self.bucket):
            self.client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                Metadata=dict(head.get("Metadata") or {}),
                MetadataDirective="REPLACE",
            )

    def _cache(self, src: Path, sha256: str) -> None:
        try:
            self._publish_local(src, super().path(sha256), move=True)
            self._trim_cache(keep=super().path(sha256))
        except (OSError, StoreError):
            pass  # the object is in the bucket; the cache copy is only a shortcut

    def exists(self, sha256: str) -> bool:
        return self._head(self.object_key(sha256)) is not None

    def size(self, sha256: str) -> int | None:
        head = self._head(self.object_key(sha256))
        return None if head is None else int(head["ContentLength"])

    def modified_at(self, sha256: str) -> float | None:
        """The object's LastModified in the bucket (epoch seconds), None when absent (GC spares young objects)."""
        head = self._head(self.object_key(sha256))
        return None if head is None else float(head["LastModified"].timestamp())

    def list_keys(self) -> Iterator[str]:
        """Every object's sha256 in the bucket under `<prefix>objects/` (for garbage collection)."""
        start = f"{self.prefix}objects/"
        for key in self._list(start):
            name = key[len(start) :]
            sha = name[3 : -len(OBJECT_SUFFIX)] if name.endswith(OBJECT_SUFFIX) else ""
            if len(sha) == 64 and name[:3] == f"{sha[:2]}/":
                yield sha

    def _list(self, prefix: str) -> Iterator[str]:
        with s3_errors(self.bucket):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield str(item["Key"])

    def delete(self, sha256: str) -> bool:
        """Remove the object from the bucket and this process's cache; True when the bucket held it."""
        key = self.object_key(sha256)
        existed = self._head(key) is not None
        with s3_errors(self.bucket):
            self.client.delete_object(Bucket=self.bucket, Key=key)
        super().path(sha256).unlink(missing_ok=True)
        return existed

    def count_objects(self) -> int:
        return sum(1 for _ in self.list_keys())

    def _trim_cache(self, *, keep: Path) -> None:
        """Delete cached objects, least recently used first, until the cache fits `cache_max_bytes`."""
        if self.cache_max_bytes is None:
            return
        files = [(p.stat(), p) for p in (self.root / "objects").glob(f"??/*{OBJECT_SUFFIX}") if p != keep]
        total = sum(st.st_size for st, _ in files) + (keep.stat().st_size if keep.is_file() else 0)
        for st, p in sorted(files, key=lambda item: item[0].st_mtime):
            if total <= self.cache_max_bytes:
                break
            p.unlink(missing_ok=True)  # a reader that memory-mapped it keeps its pages
            total -= st.st_size

    # --- cohorts --------------------------------------------------------------------------------------------
    def add_cohort_dir(self, src: Path, cohort_id: str) -> Path:
        """Keep the extracted cohort locally and publish it as one verified tar object for remote workers."""
        final = super().add_cohort_dir(src, cohort_id)
        tmp = self.new_tmp_path(".tar")
        try:
            with writing(), tarfile.open(tmp, "w") as tar:
                tar.add(final, arcname=".")
            upload_verified(
                self.client, self.bucket, self.cohort_key(cohort_id), tmp, sha256_file(tmp), part_size=self.part_size
            )
        except BaseException:
            super().delete_cohort(cohort_id)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        return final

    def cohort_dir(self, cohort_id: str) -> Path:
        """The local directory of an uploaded cohort, fetched from the bucket (verified, extracted) when absent."""
        local = super().cohort_dir(cohort_id)
        if local.is_dir():
            return local
        tar_path = self.new_tmp_path(".tar")
        work = self.new_tmp_path()
        try:
            if download_verified(self.client, self.bucket, self.cohort_key(cohort_id), tar_path, self.tmp_dir()):
                with writing(), tarfile.open(tar_path, "r") as tar:
                    tar.extractall(work, filter="data")
                    local.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.replace(work, local)
                    except OSError:
                        if not local.is_dir():  # else another thread or process extracted it first
                            raise
        finally:
            tar_path.unlink(missing_ok=True)
            shutil.rmtree(work, ignore_errors=True)
        return local

    def list_cohort_ids(self) -> list[str]:
        """Ids of the cohorts published in the bucket (for garbage collection)."""
        start = f"{self.prefix}cohorts/"
        names = (key[len(start) : -len(".tar")] for key in self._list(start) if key.endswith(".tar"))
        return sorted(n for n in names if _SAFE_ID.match(n))

    def cohort_modified_at(self, cohort_id: str) -> float | None:
        head = self._head(self.cohort_key(cohort_id))
        return None if head is None else float(head["LastModified"].timestamp())

    def delete_cohort(self, cohort_id: str) -> None:
        super().delete_cohort(cohort_id)
        with s3_errors(self.bucket):
            self.client.delete_object(Bucket=self.bucket, Key=self.cohort_key(cohort_id))

    def count_cohorts(self) -> int:
        return sum(1 for _ in self._list(f"{self.prefix}cohorts/"))

    # --- health ---------------------------------------------------------------------------------------------
    def is_writable(self) -> bool:
        """The scratch directory is writable and the bucket answers (readiness probe)."""
        if not super().is_writable():
            return False
        try:
            with s3_errors(self.bucket):
                self.client.head_bucket(Bucket=self.bucket)
            return True
        except StoreError:
            return False

    def clear_tmp(self, *, older_than_s: float = 3600.0) -> int:
        """Local leftovers, plus multipart uploads under the prefix started more than `older_than_s` ago (a
        process killed mid-upload leaves one: invisible, but it holds space)."""
        removed = super().clear_tmp(older_than_s=older_than_s)
        cutoff = time.time() - older_than_s
        try:
            with s3_errors(self.bucket):
                listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
                for up in listing.get("Uploads", []):
                    if up["Initiated"].timestamp() < cutoff:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                        removed += 1
        except StoreError:
            pass  # start-up must not fail on this housekeeping
        return removed

    def __repr__(self) -> str:
        return f"S3ArtifactStore(bucket={self.bucket!r}, prefix={self.prefix!r}, scratch={str(self.root)!r})"


__all__ = ["S3ArtifactStore", "make_client"]
