"""The STEPH Python SDK: `Client(base_url, api_key).predict(model_id, path)` and friends.

Imports only httpx and the stdlib (no torch, FastAPI, SQLAlchemy): hospital IT can install it light.
Every method returns typed dataclasses (`app.client.types`) and raises `ClientError` (or its subclasses
`AuthError`, `ConnectionFailed`) carrying the server's message.
The API key never appears in `repr`, logs or errors.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from app.client.files import file_part, zip_directory
from app.client.transport import ClientError, Transport
from app.client.types import (
    Base,
    Checkpoint,
    Cohort,
    Health,
    MergeJob,
    Model,
    Prediction,
    from_json,
    prediction_from_json,
)

PathLike = str | os.PathLike[str]


def _is_model_id(ref: str) -> bool:
    """Not a registry reference (name@alias, name/version): a model id, or possibly a bare registered name."""
    return "@" not in ref and "/" not in ref


def _items(body: Any) -> list[dict[str, Any]]:
    """A list endpoint's items, whether the server answers a bare list or `{"items": [...]}`."""
    if isinstance(body, list):
        return body
    for key in ("items", "results", "data"):
        if isinstance(body, dict) and isinstance(body.get(key), list):
            return body[key]
    raise ClientError(0, f"unexpected list response shape: {str(body)[:200]}")


class Client:
    """A connection to one STEPH service.

    Args: base_url (e.g. "http://steph:8000"), api_key (sent as `Authorization: Bearer`), timeout (seconds per
    request), retries (extra attempts on connection errors / 429 / 5xx), backoff (first retry delay,
    doubled each time).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        raw_predict: bool = True,
    ) -> None:
        """raw_predict: send a single bag as the raw body of POST /predict/bag (the fast path; False = always
        multipart POST /predict)."""
        self._raw_predict = raw_predict
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self._t = Transport(base_url, api_key, timeout=timeout, retries=retries, backoff=backoff, sleep=sleep)
        self.base_url = self._t.base_url

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._t.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._t.request(method, path, **kwargs)
        return response.json() if response.content else None

    def _list(self, path: str, params: dict[str, Any] | None = None, page: int = 100) -> list[dict[str, Any]]:
        """All items of a list endpoint, following `{"items", "total", "limit", "offset"}` pagination."""
        items: list[dict[str, Any]] = []
        while True:
            body = self._json("GET", path, params={**(params or {}), "limit": page, "offset": len(items)})
            batch = _items(body)
            items.extend(batch)
            total = body.get("total") if isinstance(body, dict) else None
            if not batch or not isinstance(total, int) or len(items) >= total:
                return items

    # ---- operations ----
    def health(self) -> Health:
        """`GET /health/ready` → Health(status, checks)."""
        return from_json(Health, self._json("GET", "/health/ready"))

    def list_methods(self) -> list[dict[str, Any]]:
        """`GET /methods`: merge methods with their parameters [{name, paper, summary, learned, params}]."""
        return _items(self._json("GET", "/methods"))

    def list_bases(self) -> list[Base]:
        return [from_json(Base, b) for b in self._list("/bases")]

    def get_base(self, base_id: str) -> Base:
        return from_json(Base, self._json("GET", f"/bases/{base_id}"))

    def register_base(self, path: PathLike, name: str, encoder: str) -> Base:
        """Upload θ₀ (`.safetensors` or reference `.pth`); dims are read from the file by the server."""
        p = Path(path)
        body = self._json(
            "POST",
            "/bases",
            data={"name": name, "encoder": encoder},
            open_files=lambda s: {"file": file_part(s, p)},
        )
        return from_json(Base, body)

    def register_checkpoint(
        self,
        path: PathLike,
        cancer: str,
        base_id: str,
        name: str | None = None,
        description: str | None = None,
    ) -> Checkpoint:
        """Upload a per-cancer checkpoint; the same bytes twice return the existing checkpoint."""
        p = Path(path)
        data = {"cancer": cancer, "base_id": base_id}
        data.update({k: v for k, v in (("name", name), ("description", description)) if v})
        body = self._json("POST", "/checkpoints", data=data, open_files=lambda s: {"file": file_part(s, p)})
        return from_json(Checkpoint, body)

    def list_checkpoints(self, base_id: str | None = None, cancer: str | None = None) -> list[Checkpoint]:
        params = {k: v for k, v in (("base_id", base_id), ("cancer", cancer)) if v}
        return [from_json(Checkpoint, c) for c in self._list("/checkpoints", params)]

    def get_checkpoint(self, checkpoint_id: str) -> Checkpoint:
        return from_json(Checkpoint, self._json("GET", f"/checkpoints/{checkpoint_id}"))

    def delete_checkpoint(self, checkpoint_id: str) -> None:
        self._t.request("DELETE", f"/checkpoints/{checkpoint_id}")

    def register_cohort(self, path_or_archive: PathLike, name: str, base_id: str) -> Cohort:
        """Upload a cohort: a directory (zipped on the fly) or a ready `.zip` / `.tar[.gz]` archive."""
        p = Path(path_or_archive)
        if not p.exists():
            raise FileNotFoundError(f"cohort {p} does not exist: give a cohort directory or a zip/tar of one")
        with tempfile.TemporaryDirectory(prefix="steph-cohort-") as tmp:
            archive = zip_directory(p, Path(tmp) / f"{p.name or 'cohort'}.zip") if p.is_dir() else p
            body = self._json(
                "POST",
                "/cohorts",
                data={"name": name, "base_id": base_id},
                open_files=lambda s: {"file": file_part(s, archive)},
            )
        return from_json(Cohort, body)

    def register_cohort_path(self, server_path: str, name: str, base_id: str) -> Cohort:
        """Register a cohort directory already on the server, under its configured data root (admin)."""
        body = self._json("POST", "/cohorts", json={"name": name, "base_id": base_id, "path": server_path})
        return from_json(Cohort, body)

    def get_cohort(self, cohort_id: str) -> Cohort:
        return from_json(Cohort, self._json("GET", f"/cohorts/{cohort_id}"))

    def submit_merge_job(
        self,
        method: str,
        base_id: str,
        target_checkpoint_id: str,
        cohort_id: str,
        source_checkpoint_ids: Sequence[str] | None = None,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> MergeJob:
        """`POST /merge-jobs` with an `Idempotency-Key` (uuid4 if not given): retries never duplicate."""
        payload: dict[str, Any] = {
            "method": method,
            "base_id": base_id,
            "target_checkpoint_id": target_checkpoint_id,
            "cohort_id": cohort_id,
            "params": dict(params or {}),
        }
        if source_checkpoint_ids is not None:
            payload["source_checkpoint_ids"] = list(source_checkpoint_ids)
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return from_json(MergeJob, self._json("POST", "/merge-jobs", json=payload, headers=headers))

    def get_job(self, job_id: str) -> MergeJob:
        return from_json(MergeJob, self._json("GET", f"/merge-jobs/{job_id}"))

    def list_jobs(self) -> list[MergeJob]:
        return [from_json(MergeJob, j) for j in self._list("/merge-jobs")]

    def cancel_job(self, job_id: str) -> MergeJob:
        return from_json(MergeJob, self._json("POST", f"/merge-jobs/{job_id}/cancel"))

    def wait_for_job(
        self,
        job_id: str,
        poll_s: float = 2.0,
        on_progress: Callable[[MergeJob], None] | None = None,
        timeout_s: float | None = None,
    ) -> MergeJob:
        """Poll until the job is succeeded/failed/cancelled; `on_progress(job)` after every poll.

        Raises TimeoutError past `timeout_s`. Does not raise on a failed job: check `job.status`.
        """
        start = time.monotonic()
        while True:
            job = self.get_job(job_id)
            if on_progress is not None:
                on_progress(job)
            if job.done:
                return job
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout_s:.0f}s")
            time.sleep(poll_s)

    def list_models(self) -> list[Model]:
        return [from_json(Model, m) for m in self._list("/models")]

    def get_model(self, model_id: str) -> Model:
        """A model by id, or by reference: `name@alias`, `name/<version>`, `name/latest`, a registered name."""
        if not _is_model_id(model_id):
            return self.resolve_model(model_id)
        try:
            return from_json(Model, self._json("GET", f"/models/{model_id}"))
        except ClientError as exc:
            if exc.status != 404 or model_id.startswith("model_"):
                raise
            return self.resolve_model(model_id)  # a bare registered name: its latest version

    def resolve_model(self, ref: str) -> Model:
        """The model a reference names now (GET /model-refs/resolve): pin it once for a batch."""
        return from_json(Model, self._json("GET", "/model-refs/resolve", params={"ref": ref}))

    def list_registered_models(self) -> list[dict[str, Any]]:
        """Registered names with their versions and aliases."""
        return self._list("/registered-models")

    def register_model_version(
        self,
        name: str,
        model_id: str,
        *,
        aliases: Sequence[str] = (),
        description: str | None = None,
        allow_not_promoted: bool = False,
    ) -> dict[str, Any]:
        """Register `model_id` (id or reference) as the next version of `name` (admin key); `aliases` may point at
        a model its merge job's promotion gate marked not_promoted only with `allow_not_promoted`."""
        body = {
            "model_id": model_id,
            "aliases": list(aliases),
            "description": description,
            "allow_not_promoted": allow_not_promoted,
        }
        return self._json("POST", f"/registered-models/{name}/versions", json=body)

    def set_alias(self, name: str, alias: str, version: int, *, allow_not_promoted: bool = False) -> dict[str, Any]:
        """Point `name@alias` at `version` (admin key); the answer names the previous version. A version whose
        model was marked not_promoted by its promotion gate needs `allow_not_promoted` (else a 409 error)."""
        body = {"version": version, "allow_not_promoted": allow_not_promoted}
        return self._json("PUT", f"/registered-models/{name}/aliases/{alias}", json=body)

    def download_artifact(self, model_id: str, dest: PathLike) -> Path:
        """Stream `GET /models/{id}/artifact` to `dest` (file, or dir → `<id>.safetensors`; a path ending in
        "/" is a dir, created if missing), atomically.
        `model_id` may also be a reference (name@alias, name/version): it is resolved to the id first."""
        if not _is_model_id(model_id):
            model_id = self.resolve_model(model_id).id
        as_dir = str(dest).endswith(("/", os.sep))  # "models/" names a folder, made if missing (docs/client.md)
        dest = Path(dest)
        if as_dir:
            dest.mkdir(parents=True, exist_ok=True)
        if dest.is_dir():
            dest = dest / f"{model_id}.safetensors"
        tmp = dest.with_name(dest.name + ".part")
        hashes: list[Any] = []

        def sink(response: httpx.Response) -> None:
            hashes.append(hashlib.sha256())  # a fresh digest on every attempt
            with tmp.open("wb") as fh:
                for chunk in response.iter_bytes():
                    fh.write(chunk)
                    hashes[-1].update(chunk)

        response = self._t.request("GET", f"/models/{model_id}/artifact", sink=sink)
        headers = response.headers
        expected = headers.get("X-Content-SHA256") or headers.get("ETag", "").strip('"')
        got = hashes[-1].hexdigest()
        if len(expected) == 64 and expected != got:
            tmp.unlink(missing_ok=True)
            raise ClientError(
                0, f"artifact {model_id} sha256 mismatch: got {got}, server says {expected}; download again"
            )
        tmp.replace(dest)
        return dest

    def predict(
        self, model_id: str, paths: PathLike | Sequence[PathLike] | Mapping[str, Sequence[PathLike]]
    ) -> list[Prediction] | dict[str, Prediction]:
        """Score bags.

        A path or list of paths → one request, a list of per-patient results as the server groups them;
        a mapping {patient_id: [slide paths]} → one request per patient, a dict keyed by patient id.
        """
        if isinstance(paths, Mapping):
            return {pid: self.predict_patient(model_id, pid, files) for pid, files in paths.items()}
        files = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        return self._predict(model_id, [Path(f) for f in files], patient_id=None)

    def predict_patient(self, model_id: str, patient_id: str, paths: Iterable[PathLike]) -> Prediction:
        """Score one patient's slides (their bags are pooled by the server into one prediction)."""
        results = self._predict(model_id, [Path(p) for p in paths], patient_id=patient_id)
        if len(results) != 1:
            raise ClientError(0, f"expected one result for patient {patient_id}, server returned {len(results)}")
        return replace(results[0], patient_id=patient_id)

    def predict_paths(self, model_id: str, paths: Sequence[str], *, patient_id: str | None = None) -> list[Prediction]:
        """Score bags the SERVER reads in place (POST /predict/paths): `paths` are absolute paths under its
        STEPH_DATA_ROOT or relative to it; nothing is uploaded. The server must allow it (STEPH_PREDICT_PATHS);
        `patient_id` pools the files into one patient."""
        if not paths:
            raise ValueError("predict_paths needs at least one path")
        body: dict[str, Any] = {"model_id": model_id, "paths": [str(p) for p in paths]}
        if patient_id is not None:
            body["patient_id"] = patient_id
        return self._predictions(self._json("POST", "/predict/paths", json=body), model_id)

    def _predict_raw(self, data: dict[str, str], path: Path) -> Any:
        """One bag as the raw body of POST /predict/bag (no multipart encoding on either side: the fast path).
        None when the server predates that route (its plain 404/405): the caller falls back to POST /predict."""
        params = {**data, "filename": path.name}
        headers = {"Content-Type": "application/octet-stream"}
        try:
            return self._json(
                "POST", "/predict/bag", params=params, headers=headers,
                open_content=lambda s: s.enter_context(path.open("rb")),
            )  # fmt: skip
        except ClientError as exc:
            no_route = exc.status == 405 or (
                exc.status == 404 and (exc.code is None or exc.message.startswith("no route"))
            )
            if no_route:  # an older server; an unknown model is a 404 "model … not found", raised as it is
                self._raw_predict = False
                return None
            raise

    def _predict(self, model_id: str, paths: list[Path], patient_id: str | None) -> list[Prediction]:
        if not paths:
            raise ValueError("predict needs at least one bag file")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"bag file(s) not found: {', '.join(missing)}")
        empty = [f"{p}: the file is empty (0 bytes)" for p in paths if p.stat().st_size == 0]
        if empty:
            raise ValueError("; ".join(empty))
        data = {"model_id": model_id}
        if patient_id is not None:  # one id for all files: the patient's slides are pooled into one bag
            data["patient_id"] = patient_id
        body = self._predict_raw(data, paths[0]) if len(paths) == 1 and self._raw_predict else None
        if body is None:
            body = self._json(
                "POST", "/predict", data=data, open_files=lambda s: [("files", file_part(s, p)) for p in paths]
            )
        return self._predictions(body, model_id)

    def _predictions(self, body: Any, model_id: str) -> list[Prediction]:
        items = _items(body.get("results", body.get("predictions")) if isinstance(body, dict) else body)
        extra = body if isinstance(body, dict) else {}
        mid = str(extra.get("model_id") or model_id)
        sha = str(extra.get("model_sha256") or extra.get("artifact_sha256") or "")
        kind = str(extra.get("model_type") or extra.get("method") or "")
        gate = str(extra.get("promotion_status") or "")
        try:
            return [prediction_from_json(it, model_id=mid, model_sha256=sha, model_type=kind, promotion_status=gate)
                    for it in items]  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ClientError(
                0,
                f"unexpected /predict response ({type(exc).__name__}: {exc}); is the client older than the service?",
            ) from None
