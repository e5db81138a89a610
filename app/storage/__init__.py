"""Artifact store adapters: `open_store(settings)` → the local directory store or the S3-compatible one.

STEPH_STORE=local (default)  ArtifactStore(STEPH_STORE_ROOT)            app.storage.store
STEPH_STORE=s3               S3ArtifactStore(bucket, scratch=STEPH_STORE_ROOT)   app.storage.s3 (extra `s3`)
"""

from __future__ import annotations

from typing import Any

from app.storage.store import ArtifactStore


def open_store(settings: Any) -> ArtifactStore:
    """The store that `settings.store` names, its local root (the store, or the S3 scratch cache) created."""
    kind = getattr(settings, "store", "local")
    if kind == "s3":
        try:
            from app.storage.s3 import S3ArtifactStore
        except ImportError as exc:  # boto3 missing
            raise RuntimeError(
                "STEPH_STORE=s3 needs boto3: install the service with the s3 extra (pip install 'steph-service[s3]')"
            ) from exc
        store: ArtifactStore = S3ArtifactStore.from_settings(settings)
    elif kind == "local":
        store = ArtifactStore(settings.store_root)
    else:
        raise ValueError(f"unknown STEPH_STORE {kind!r}; use 'local' or 's3'")
    store.root.mkdir(parents=True, exist_ok=True)
    return store
