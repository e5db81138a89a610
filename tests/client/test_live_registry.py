"""steph-client and the SDK with model references (issue 9): name@alias and name/version against the real
service."""

from __future__ import annotations

import json

import pytest

from app.client import Client
from tests.client.test_live import read_rows, run_client

pytestmark = pytest.mark.slow


def test_model_references_work_in_the_sdk_and_the_cli(live, bag_folder, tmp_path):
    """name@alias and name/version name the same model as its id: predict, show, download, score (issue 9)."""
    import hashlib

    with Client(live.url, live.admin_key) as admin:
        version = admin.register_model_version(  # the tiny live world's gate may not promote the model
            "live-ref", live.model_id, aliases=["champion"], allow_not_promoted=True
        )
        assert version["model_id"] == live.model_id and version["aliases"] == ["champion"]
    with Client(live.url, live.predict_key) as client:
        assert client.get_model("live-ref@champion").id == live.model_id
        assert client.get_model(f"live-ref/{version['version']}").id == live.model_id
        bag = sorted(bag_folder.iterdir())[0]
        by_ref = client.predict("live-ref@champion", bag)
        by_id = client.predict(live.model_id, bag)
        assert by_ref[0].model_id == live.model_id and by_ref[0].risk == by_id[0].risk
        path = client.download_artifact("live-ref@champion", tmp_path)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == client.get_model(live.model_id).artifact_sha256
    shown = run_client(live, "models", "live-ref@champion")
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == live.model_id, shown.stderr
    out = tmp_path / "scores.csv"
    scored = run_client(live, "score", "--model", "live-ref@champion", "--input", str(bag_folder), "--output", str(out))
    assert scored.returncode == 0, scored.stderr
    assert {row["model_id"] for row in read_rows(out)} == {live.model_id}
    missing = run_client(live, "models", "live-ref@nope")
    assert missing.returncode == 2 and "nope" in missing.stderr  # an unknown model: exit 2 (docs/client.md)


def test_register_model_and_alias_commands(live):
    made = run_client(
        live, "register-model", "cli-ref", live.model_id, "--alias", "candidate", "--allow-not-promoted",
        key=live.admin_key,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    version = json.loads(made.stdout)
    assert (version["version"], version["aliases"], version["model_id"]) == (1, ["candidate"], live.model_id)
    moved = run_client(live, "alias", "cli-ref", "champion", "1", "--allow-not-promoted", key=live.admin_key)
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["previous_version"] is None
    refused = run_client(live, "alias", "cli-ref", "champion", "1")  # the predict key may not move aliases
    assert refused.returncode == 2 and "scope" in refused.stderr
    with Client(live.url, live.predict_key) as client:
        assert client.get_model("cli-ref@champion").id == live.model_id
