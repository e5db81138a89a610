"""Class 5f (issue 8): patient identifiers never appear in the server log or a job's error. A merge that
diverges (a bag of huge but finite features makes the loss non-finite) names the patient by a short hash."""

from __future__ import annotations

import csv
import hashlib
import logging

import numpy as np

from tests.api.conftest import admin, client, ctx, family, settings, world  # noqa: F401
from tests.fixtures import write_bag
from tests.workers.api_helpers import job_body, wait_job

SECRET_IDS = [f"MRN-SECRET-{i:04d}" for i in range(8)]


def _cohort_with_exploding_bag(directory) -> None:
    directory.mkdir(parents=True)
    with open(directory / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "pathology_id", "t", "e"])
        for i, pid in enumerate(SECRET_IDS):
            w.writerow([pid, f"slide{i}", 100.0 + 50 * i, i % 2])
            write_bag(directory / "bags" / f"slide{i}.h5", 4 + i, 16, seed=i)
    import h5py

    with h5py.File(directory / "bags" / "slide0.h5", "r+") as f:  # finite, but no float32 sum survives it
        f["features"][...] = np.full(f["features"].shape, 3.0e38, dtype=np.float32)
    with open(directory / "splits.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["train", "test"])
        for i in range(5):
            w.writerow([SECRET_IDS[i], SECRET_IDS[5 + i] if i < 3 else ""])


def test_a_diverged_merge_names_no_patient(client, admin, family, settings, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    _cohort_with_exploding_bag(settings.data_root / "secret")
    r = client.post("/cohorts", headers=admin, json={"name": "s", "base_id": family["base"]["id"], "path": "secret"})
    assert r.status_code == 201, r.text
    job = client.post("/merge-jobs", headers=admin, json=job_body(family, r.json()["id"], params={"epochs": 1,
                      "accum": 1, "topk": 2, "hyper_hidden": 8, "gate": "off"}))  # fmt: skip
    assert job.status_code == 202, job.text
    done = wait_job(client, admin, job.json()["id"])
    assert done["status"] == "failed", done
    assert "diverged" in done["error"], done["error"]
    expected = "id-hash " + hashlib.sha256(SECRET_IDS[0].encode()).hexdigest()[:12]
    assert expected in done["error"], done["error"]
    assert "MRN-SECRET" not in done["error"]
    assert "MRN-SECRET" not in caplog.text, [line for line in caplog.text.splitlines() if "MRN-SECRET" in line][:3]
    assert "diverged" in caplog.text or "failed" in caplog.text  # the failure itself was logged
