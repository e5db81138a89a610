"""Helpers shared by the jobs / models / predict API tests (register a cohort, run a job to the end)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.fixtures import TinyWorld
from tests.workers.world import job_cohort

FAST = {"epochs": 1, "accum": 2, "topk": 2, "hyper_hidden": 8}


def register_cohort(client: TestClient, admin: dict, world: TinyWorld, base_id: str) -> dict:
    _, archive = job_cohort(world.root)
    r = client.post(
        "/cohorts",
        headers=admin,
        data={"name": "brca", "base_id": base_id},
        files={"file": ("cohort.zip", archive.read_bytes(), "application/zip")},
    )
    assert r.status_code == 201, r.text
    return r.json()


def job_body(
    family: dict,
    cohort_id: str,
    *,
    method: str = "steph",
    params: dict | None = None,
    target: str = "brca",
    sources: list[str] | None = None,
) -> dict[str, Any]:
    body = {
        "method": method,
        "base_id": family["base"]["id"],
        "target_checkpoint_id": family["checkpoints"][target]["id"],
        "cohort_id": cohort_id,
        "params": dict(FAST if params is None else params),
    }
    if sources is not None:
        body["source_checkpoint_ids"] = sources
    return body


def register_cohort_without_test_split(client: TestClient, admin: dict, base_id: str, root: Path) -> dict:
    """An 8-patient cohort with no splits.csv (every patient trains, nothing is held out), registered: the row."""
    from tests.fixtures import write_cohort, zip_dir

    directory = write_cohort(root / "nosplit", n_patients=8, seed=3)
    (directory / "splits.csv").unlink()
    archive = zip_dir(directory, root / "nosplit.zip")
    r = client.post("/cohorts", headers=admin, data={"name": "nosplit", "base_id": base_id},
                    files={"file": ("c.zip", archive.read_bytes(), "application/zip")})  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()


def wait_job(
    client: TestClient,
    headers: dict,
    job_id: str,
    *,
    timeout: float = 60.0,
    statuses: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = client.get(f"/merge-jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["status"] in statuses:
            return r.json()
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {statuses}: {r.json()}")


def run_job(client: TestClient, admin: dict, family: dict, cohort_id: str, **kw: Any) -> dict:
    r = client.post("/merge-jobs", headers=admin, json=job_body(family, cohort_id, **kw))
    assert r.status_code == 202, r.text
    job = wait_job(client, admin, r.json()["id"])
    assert job["status"] == "succeeded", job
    return job


def register_family_http(client: TestClient, admin: dict, world: TinyWorld) -> tuple[dict, dict]:
    """Upload the world's base and checkpoints and register its target cohort through the API →
    ({"base", "checkpoints": {cancer: row}}, cohort)."""

    def up(path):
        return {"file": (path.name, path.read_bytes(), "application/octet-stream")}

    r = client.post("/bases", headers=admin, files=up(world.base), data={"name": "tiny", "encoder": "test-16"})
    assert r.status_code == 201, r.text
    base = r.json()
    ckpts = {}
    for cancer, path in world.checkpoints.items():
        r = client.post("/checkpoints", headers=admin, files=up(path), data={"cancer": cancer, "base_id": base["id"]})
        assert r.status_code == 201, r.text
        ckpts[cancer] = r.json()
    return {"base": base, "checkpoints": ckpts}, register_cohort(client, admin, world, base["id"])
