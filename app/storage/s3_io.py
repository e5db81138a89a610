"""Verified, streamed transfers between a local file and an S3-compatible bucket (boto3 client).

    upload_verified(client, bucket, key, src, sha256, part_size)   single PUT or multipart upload
    download_verified(client, bucket, key, dest, tmp_dir, sha256)  streamed GET, re-hashed, renamed into place
    s3_errors(bucket)                                              botocore failures → StoreUnavailable/StoreFull

Atomic publish: S3 makes an object visible only when its PUT or CompleteMultipartUpload succeeds. The upload
re-hashes the bytes it sends (one pass, one part in memory at a time) and completes the multipart upload only
when they hash to the expected sha256; any failure aborts it, so nothing half-written is ever listed. Each
part carries a Content-MD5 so the server refuses bytes damaged in transit.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.storage.errors import StoreError, StoreFull, StoreUnavailable
from app.storage.store import writing

CHUNK = 1 << 20
SHA256_META = "sha256"  # x-amz-meta-sha256: the object's sha256 (hex), checked on every download
_MISSING = {"NoSuchKey", "404", "NotFound"}
_FULL = {"QuotaExceeded", "XMinioStorageFull", "StorageFull", "XMinioAdminBucketQuotaExceeded"}


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def is_missing(exc: BaseException) -> bool:
    """Whether a botocore ClientError means "no such key"."""
    response = getattr(exc, "response", None)
    return isinstance(response, dict) and str(response.get("Error", {}).get("Code")) in _MISSING


@contextmanager
def s3_errors(bucket: str) -> Iterator[None]:
    """Translate botocore errors raised inside the block into StoreFull / StoreUnavailable (with what to do)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "error"))
        if code in _FULL:
            raise StoreFull(
                f"the object store refused the write ({code}): the bucket {bucket!r} is full or over its quota; "
                "free space or raise the quota, then send the request again"
            ) from exc
        raise StoreUnavailable(
            f"the object store refused the request ({code}) on bucket {bucket!r}; check STEPH_S3_BUCKET, "
            "STEPH_S3_ENDPOINT_URL and the AWS credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        ) from exc
    except BotoCoreError as exc:
        raise StoreUnavailable(
            f"the object store cannot be reached ({type(exc).__name__}); check STEPH_S3_ENDPOINT_URL, the network "
            "and that the S3 service is up, then retry"
        ) from exc


def upload_verified(
    client: Any, bucket: str, key: str, src: Path, sha256: str, *, part_size: int, metadata: dict | None = None
) -> None:
    """Upload `src` to `key`, publishing it only if the bytes sent hash to `sha256` (else StoreError).

    Files up to `part_size` bytes go in one PUT; larger ones as a multipart upload of `part_size` parts
    (memory: one part), aborted on any failure.
    """
    meta = {SHA256_META: sha256, **(metadata or {})}
    size = src.stat().st_size
    with s3_errors(bucket):
        if size <= part_size:
            data = src.read_bytes()
            _check(hashlib.sha256(data).hexdigest(), sha256, key)
            client.put_object(Bucket=bucket, Key=key, Body=data, ContentMD5=_md5_b64(data), Metadata=meta)
            return
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=meta)["UploadId"]
        try:
            parts = _upload_parts(client, bucket, key, upload_id, src, sha256, part_size)
            client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            _abort(client, bucket, key, upload_id)
            raise


def _upload_parts(
    client: Any, bucket: str, key: str, upload_id: str, src: Path, sha256: str, part_size: int
) -> list[dict[str, Any]]:
    """Send `src` in parts, hashing on the way; the part list, once the whole file hashed to `sha256`."""
    digest = hashlib.sha256()
    parts: list[dict[str, Any]] = []
    with open(src, "rb") as f:
        while chunk := f.read(part_size):
            digest.update(chunk)
            number = len(parts) + 1
            r = client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk, ContentMD5=_md5_b64(chunk)
            )
            parts.append({"PartNumber": number, "ETag": r["ETag"]})
    _check(digest.hexdigest(), sha256, key)
    return parts


def _abort(client: Any, bucket: str, key: str, upload_id: str) -> None:
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception:  # noqa: BLE001 (best effort: clear_tmp aborts stale uploads later)
        pass


def _check(actual: str, expected: str, key: str) -> None:
    if actual != expected:
        raise StoreError(
            f"the file for {Path(key).name[:12]}… changed while being stored (it hashes to {actual[:12]}…); "
            "nothing was published, send the request again"
        )


def download_verified(
    client: Any, bucket: str, key: str, dest: Path, tmp_dir: Path, *, sha256: str | None = None
) -> bool:
    """Stream `key` into a temp file in `tmp_dir`, check its sha256 (given, else the object's x-amz-meta-sha256)
    and rename it to `dest`. False when the bucket has no such key; StoreError when the bytes do not match."""
    from botocore.exceptions import ClientError

    tmp = tmp_dir / f"dl-{uuid.uuid4().hex}"
    try:
        with s3_errors(bucket):
            try:
                response = client.get_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if is_missing(exc):
                    return False
                raise
            expected = sha256 or response.get("Metadata", {}).get(SHA256_META)
            digest = hashlib.sha256()
            with writing(), open(tmp, "wb") as out:
                for chunk in response["Body"].iter_chunks(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        actual = digest.hexdigest()
        if not expected or actual != expected:
            raise StoreError(
                f"store object {Path(key).name[:12]}… is corrupt in the object store (its bytes hash to "
                f"{actual[:12]}…, expected {str(expected)[:12]}…); restore it from a backup"
            )
        with writing():
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        return True
    finally:
        tmp.unlink(missing_ok=True)
