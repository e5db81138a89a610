"""`steph-client` argument handling, exit codes and key hygiene, against scripted local HTTP servers."""

from __future__ import annotations

import csv

import pytest

from app.client.cli import main
from app.client.commands import cancer_for, parse_params, read_mapping
from tests.client.httpstubs import ScriptedServer

KEY = "sk-offline-SECRET-42"
MODEL = {"id": "mdl_1", "method": "steph", "artifact_sha256": "c" * 64}


def _predict_body(pid):
    return {
        "model_id": "mdl_1",
        "model_sha256": "c" * 64,
        "method": "steph",
        "results": [
            {
                "patient_id": pid,
                "risk": -3.0,
                "files": [f"{pid}.h5"],
                "survival": {"times_days": [0, 365, 730, 1095], "probabilities": [1, 0.8, 0.6, 0.3]},
                "sources": [{"cancer": "LUAD", "weight": 0.3, "lam": 0.1}, {"cancer": "BRCA", "weight": 0.6}],
            }
        ],
    }


def test_missing_configuration_is_exit_2_with_advice(tmp_path, capsys):
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert main(["models"], env=env) == 2
    assert "STEPH_URL" in capsys.readouterr().err
    assert main(["models", "--url", "http://127.0.0.1:9"], env=env) == 2
    assert "STEPH_API_KEY" in capsys.readouterr().err


def test_rejected_key_is_exit_2_and_never_printed(tmp_path, capsys):
    with ScriptedServer([(401, {}, {"detail": f"unknown API key {KEY[:6]}…"})]) as srv:
        code = main(["models", "--url", srv.url], env={"STEPH_API_KEY": KEY, "XDG_CONFIG_HOME": str(tmp_path)})
    out = capsys.readouterr()
    assert code == 2 and "401" in out.err
    assert KEY not in out.out + out.err


def test_score_through_the_cli_writes_rows_and_exit_codes(tmp_path, capsys):
    bags = tmp_path / "bags"
    bags.mkdir()
    (bags / "P1.h5").write_bytes(b"x")
    (bags / "P2.h5").write_bytes(b"x")
    out = tmp_path / "scores.csv"
    script = [(200, {}, MODEL), (200, {}, _predict_body("P1")), (400, {}, {"detail": "bag P2.h5 is empty"})]
    args = ["score", "--model", "mdl_1", "--input", str(bags), "--output", str(out), "--workers", "1"]
    env = {"STEPH_URL": "", "STEPH_API_KEY": KEY, "XDG_CONFIG_HOME": str(tmp_path)}
    with ScriptedServer(script) as srv:
        code = main([*args, "--url", srv.url, "-q"], env=env)
    err = capsys.readouterr().err
    assert code == 1 and "scored 1, skipped 0 (already in output), failed 1" in err
    rows = list(csv.DictReader(out.open()))
    assert [r["patient_id"] for r in rows] == ["P1"]
    assert rows[0]["top_sources"] == "BRCA:0.60;LUAD:0.30" and float(rows[0]["surv_3y"]) == 0.3
    errors = list(csv.DictReader((tmp_path / "scores.errors.csv").open()))
    assert errors[0]["patient_id"] == "P2" and errors[0]["message"] == "bag P2.h5 is empty"
    assert KEY not in err


def test_unknown_model_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "P1.h5").write_bytes(b"x")
    env = {"STEPH_API_KEY": KEY, "XDG_CONFIG_HOME": str(tmp_path)}
    args = ["score", "--model", "nope", "--input", str(tmp_path), "--output", str(tmp_path / "o.csv")]
    with ScriptedServer([(404, {}, {"detail": "model 'nope' not found"})]) as srv:
        assert main([*args, "--url", srv.url], env=env) == 2
    assert "not found" in capsys.readouterr().err


def test_params_and_mapping(tmp_path):
    assert parse_params(["epochs=3", "lr=1e-3", "topk=all", "flag=true"]) == {
        "epochs": 3,
        "lr": 0.001,
        "topk": "all",
        "flag": True,
    }
    with pytest.raises(ValueError, match="name=value"):
        parse_params(["epochs"])
    m = tmp_path / "map.csv"
    m.write_text("file,cancer\nckpt_a.safetensors,BRCA\nckpt_b,LUAD\n")
    mapping = read_mapping(m)
    assert cancer_for(tmp_path / "ckpt_a.safetensors", mapping) == "BRCA"
    assert cancer_for(tmp_path / "ckpt_b.pth", mapping) == "LUAD"
    assert cancer_for(tmp_path / "KIRC.safetensors", mapping) == "KIRC"


def test_the_client_imports_nothing_from_the_server_side():
    import subprocess
    import sys

    code = (
        "import sys, app.client, app.client.cli;"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'fastapi', 'sqlalchemy', 'numpy', 'h5py', 'pydantic', 'celery', 'safetensors')"
        " or m.startswith(('app.domain', 'app.io', 'app.services', 'app.api', 'app.db')));"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_unreachable_service_is_exit_3(tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "P1.h5").write_bytes(b"x")
    env = {"STEPH_API_KEY": KEY, "XDG_CONFIG_HOME": str(tmp_path)}
    args = ["score", "--model", "m", "--input", str(tmp_path), "--output", str(tmp_path / "o.csv")]
    assert main([*args, "--url", f"http://127.0.0.1:{port}", "--retries", "0"], env=env) == 3
    err = capsys.readouterr().err
    assert "cannot reach" in err and KEY not in err
