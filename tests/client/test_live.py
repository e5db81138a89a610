"""steph-client against the real service (uvicorn subprocess, embedded defaults): scoring end to end, resume,
crash recovery, input errors, 503 retries, FHIR output, registration, merge jobs, and key hygiene."""

from __future__ import annotations

import csv
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.client import Client
from tests.client.conftest import MERGE_PARAMS
from tests.client.fhir_check import validate_observation
from tests.client.httpstubs import FlakyProxy

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def client_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.client.cli", *args]


def run_client(live, *args: str, key: str | None = None, url: str | None = None, timeout: float = 60):
    env = live.env(key, **({"STEPH_URL": url} if url else {}))
    return subprocess.run(client_cmd(*args), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def assert_no_key(live, *texts: str) -> None:
    for text in texts:
        assert live.predict_key not in text and live.admin_key not in text


def test_score_folder_end_to_end_then_nothing_new(live, bag_folder, tmp_path):
    out = tmp_path / "scores.csv"
    args = (
        "score",
        "--model",
        live.model_id,
        "--input",
        str(bag_folder),
        "--output",
        str(out),
        "--workers",
        "3",
    )
    first = run_client(live, *args)
    assert first.returncode == 0, first.stderr
    rows = read_rows(out)
    assert out.read_text().splitlines()[0].startswith("patient_id,risk,")
    assert sorted(r["patient_id"] for r in rows) == sorted(b.stem for b in live.score_bags)
    with Client(live.url, live.predict_key) as c:
        sha = c.get_model(live.model_id).artifact_sha256
    for r in rows:
        risk, s1, s3, s5 = (float(r[k]) for k in ("risk", "surv_1y", "surv_3y", "surv_5y"))
        assert math.isfinite(risk) and 1.0 >= s1 >= s3 >= s5 >= 0.0
        assert r["model_id"] == live.model_id and r["model_sha256"] == sha and len(sha) == 64
        assert r["top_sources"] and all(p.split(":")[0] in ("BRCA", "CESC") for p in r["top_sources"].split(";"))
    assert f"scored {len(rows)}, skipped 0" in first.stderr
    before = out.read_bytes()
    second = run_client(live, *args)
    assert second.returncode == 0 and f"scored 0, skipped {len(rows)}" in second.stderr
    assert out.read_bytes() == before
    assert_no_key(live, first.stdout, first.stderr, second.stdout, second.stderr, out.read_text())


def test_killed_run_restarts_and_every_patient_appears_exactly_once(live, bag_folder, tmp_path):
    out = tmp_path / "scores.jsonl"
    args = (
        "score",
        "--model",
        live.model_id,
        "--input",
        str(bag_folder),
        "--output",
        str(out),
        "--workers",
        "1",
    )
    with FlakyProxy(live.url, fail_first=0, delay_s=0.25) as slow:  # slow service: the kill lands mid-run
        proc = subprocess.Popen(
            client_cmd(*args, "-q"),
            env=live.env(url=slow.url),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 2):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    done_before = out.read_text().count("\n")
    assert 2 <= done_before < len(live.score_bags)
    with out.open("a") as fh:
        fh.write('{"patient_id": "half-writ')  # what a kill during a write leaves
    again = run_client(live, *args)
    assert again.returncode == 0, again.stderr
    ids = [json.loads(line)["patient_id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(b.stem for b in live.score_bags)
    assert f"skipped {done_before}" in again.stderr


def test_wrong_dimension_bag_goes_to_the_errors_file_with_the_servers_message(live, bag_folder, tmp_path):
    import h5py
    import numpy as np

    with h5py.File(bag_folder / "WRONG-D.h5", "w") as f:
        f["features"] = np.ones((12, 8), dtype="float32")
    out, errors = tmp_path / "scores.csv", tmp_path / "failed.csv"
    result = run_client(
        live,
        "score",
        "--model",
        live.model_id,
        "--input",
        str(bag_folder),
        "--output",
        str(out),
        "--errors",
        str(errors),
    )
    assert result.returncode == 1, result.stderr
    assert sorted(r["patient_id"] for r in read_rows(out)) == sorted(b.stem for b in live.score_bags)
    [err] = read_rows(errors)
    assert err["patient_id"] == "WRONG-D" and err["files"].endswith("WRONG-D.h5")
    assert err["status"].startswith("4") and "16" in err["message"] and "8" in err["message"]
    assert "failed 1" in result.stderr
    assert_no_key(live, result.stdout, result.stderr, errors.read_text())


def test_503s_are_retried_then_scoring_succeeds(live, bag_folder, tmp_path):
    out = tmp_path / "scores.csv"
    with FlakyProxy(live.url, fail_first=4) as flaky:
        result = run_client(
            live,
            "score",
            "--model",
            live.model_id,
            "--input",
            str(bag_folder),
            "--output",
            str(out),
            "--workers",
            "2",
            "-v",
            url=flaky.url,
        )
    assert result.returncode == 0, result.stderr
    assert flaky.failed == 4 and len(flaky.requests) == 4 + 1 + len(live.score_bags)
    assert "answered 503" in result.stderr
    assert len(read_rows(out)) == len(live.score_bags)
    assert_no_key(live, result.stdout, result.stderr)


def test_fhir_output_is_valid_observations(live, bag_folder, tmp_path):
    out = tmp_path / "observations.ndjson"
    result = run_client(
        live,
        "score",
        "--model",
        live.model_id,
        "--input",
        str(bag_folder),
        "--output",
        str(out),
        "--format",
        "fhir",
    )
    assert result.returncode == 0, result.stderr
    resources = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(resources) == len(live.score_bags)
    for obs in resources:
        assert validate_observation(obs) == []
        assert obs["method"]["coding"][0]["code"] == live.model_id
        assert math.isfinite(obs["valueQuantity"]["value"])
    assert sorted(o["subject"]["identifier"]["value"] for o in resources) == sorted(b.stem for b in live.score_bags)


def test_manifest_with_two_slides_per_patient(live, tmp_path):
    a, b, c = live.score_bags[:3]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"patient_id,path\nPX,{a}\nPX,{b}\nPY,{c}\n")
    out = tmp_path / "m.csv"
    result = run_client(live, "score", "--model", live.model_id, "--input", str(manifest), "--output", str(out))
    assert result.returncode == 0, result.stderr
    rows = {r["patient_id"]: r for r in read_rows(out)}
    assert set(rows) == {"PX", "PY"}
    with Client(live.url, live.predict_key) as client:
        single = client.predict_patient(live.model_id, "PY", [c])
        pooled = client.predict(live.model_id, {"PX": [a, b]})["PX"]
    assert float(rows["PY"]["risk"]) == pytest.approx(single.risk, rel=1e-6)
    assert float(rows["PX"]["risk"]) == pytest.approx(pooled.risk, rel=1e-6)


def test_registration_is_deduplicated_and_merge_resubmit_is_idempotent(live, tmp_path):
    mapping = tmp_path / "map.csv"
    mapping.write_text("file,cancer\nBRCA.safetensors,BRCA\n")
    ckpt = live.world / "checkpoints" / "BRCA.safetensors"
    result = run_client(
        live, "register", str(ckpt), "--base", live.base_id, "--mapping", str(mapping), key=live.admin_key
    )
    assert result.returncode == 0, result.stderr
    [again] = json.loads(result.stdout)
    assert again["id"] == live.checkpoint_ids["BRCA"] and again["cancer"] == "BRCA"
    with Client(live.url, live.admin_key) as client:
        job = client.submit_merge_job(
            "steph",
            live.base_id,
            live.checkpoint_ids["BLCA"],
            live.cohort_id,
            source_checkpoint_ids=[live.checkpoint_ids[c] for c in ("BRCA", "CESC")],
            params=MERGE_PARAMS,
            idempotency_key=live.idempotency_key,
        )
    assert job.id == live.job_id
    watch = run_client(live, "watch", live.job_id, "-q", key=live.admin_key)
    assert watch.returncode == 0, watch.stderr
    shown = json.loads(watch.stdout)
    assert shown["status"] == "succeeded" and shown["model_id"] == live.model_id and shown["comparison"]
    assert shown["promotion"]["status"] in ("promoted", "not_promoted", "unchecked")  # the gate, as on the job
    assert_no_key(live, result.stdout, result.stderr, watch.stdout, watch.stderr)


def test_predict_key_cannot_register_and_exit_code_is_2(live):
    result = run_client(live, "register-base", str(live.world / "base.safetensors"), "--name", "x", "--encoder", "y")
    assert result.returncode == 2 and "403" in result.stderr
    assert_no_key(live, result.stdout, result.stderr)


def test_registering_the_same_base_again_says_which_one_is_returned(live):
    result = run_client(live, "register-base", str(live.world / "base.safetensors"), "--name", "renamed",
                        "--encoder", "synthetic-16", key=live.admin_key)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == live.base_id and json.loads(result.stdout)["name"] == "tiny"
    assert f"already registered as base {live.base_id} (name 'tiny'" in result.stderr


def test_keys_never_reach_the_server_log(live):
    assert_no_key(live, live.log.read_text(errors="replace"))


def test_download_artifact_matches_the_models_sha256(live, tmp_path):
    import hashlib

    result = run_client(live, "download", live.model_id, str(tmp_path))
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    with Client(live.url, live.predict_key) as client:
        expected = client.get_model(live.model_id).artifact_sha256
    assert path.parent == tmp_path and hashlib.sha256(path.read_bytes()).hexdigest() == expected
    fresh = run_client(live, "download", live.model_id, str(tmp_path / "models") + "/")  # a folder not made yet
    assert fresh.returncode == 0, fresh.stderr
    assert Path(fresh.stdout.strip()) == tmp_path / "models" / f"{live.model_id}.safetensors"


def test_methods_and_models_listing(live):
    methods = run_client(live, "methods", key=live.admin_key)
    assert methods.returncode == 0, methods.stderr
    names = {m["name"] for m in json.loads(methods.stdout)}
    assert {"steph", "average"} <= names
    models = run_client(live, "models")
    assert models.returncode == 0, models.stderr
    listed = json.loads(models.stdout)
    assert live.model_id in {m["id"] for m in listed}
    assert next(m for m in listed if m["id"] == live.model_id)["method"] == "steph"


def test_server_paths_score_in_place_like_uploads(live, tmp_path):
    """--server-paths: the server reads the bags under its STEPH_DATA_ROOT (here the synthetic world) instead of
    receiving uploads; same risks as the upload run, and a bag outside the root is an error row, not a crash."""
    manifest = tmp_path / "manifest.csv"
    bags = live.score_bags[:4]
    manifest.write_text("patient_id,path\n" + "".join(f"{b.stem},{b}\n" for b in bags))
    uploaded, in_place = tmp_path / "up.csv", tmp_path / "paths.csv"
    args = ("score", "--model", live.model_id, "--input", str(manifest), "-q")
    assert run_client(live, *args, "--output", str(uploaded)).returncode == 0
    done = run_client(live, *args, "--output", str(in_place), "--server-paths", "--server-root", str(live.world))
    assert done.returncode == 0, done.stderr
    want = {r["patient_id"]: float(r["risk"]) for r in read_rows(uploaded)}
    got = {r["patient_id"]: float(r["risk"]) for r in read_rows(in_place)}
    assert set(got) == {b.stem for b in bags} and got == pytest.approx(want, abs=1e-6)
    assert live.log.read_text().count("POST /predict/paths") >= len(bags)

    outside = tmp_path / "outside.h5"
    shutil.copy(bags[0], outside)
    manifest.write_text(f"patient_id,path\nP-OUT,{outside}\n")
    bad = run_client(live, *args, "--output", str(tmp_path / "bad.csv"), "--server-paths")  # absolute path sent
    assert bad.returncode == 1
    errors = read_rows(tmp_path / "bad.errors.csv")
    assert [e["patient_id"] for e in errors] == ["P-OUT"] and "data root" in errors[0]["message"]
