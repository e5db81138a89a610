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


def _score_args(tmp_path, bags, out):
    return ["score", "--model", "mdl_1", "--input", str(bags), "--output", str(out), "--workers", "1", "-q"]


ENV_OK = {"STEPH_URL": "", "STEPH_API_KEY": KEY}


def test_a_second_run_on_the_same_output_stops_at_once_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import threading

    from app.client.sdk import Client

    bags = tmp_path / "bags"
    bags.mkdir()
    for i in range(3):
        (bags / f"P{i}.h5").write_bytes(b"x")
    out = tmp_path / "scores.csv"
    env = {**ENV_OK, "XDG_CONFIG_HOME": str(tmp_path)}
    started, release = threading.Event(), threading.Event()
    real_predict = Client.predict_patient

    def slow_predict(self, *args, **kwargs):
        started.set()
        assert release.wait(10)
        return real_predict(self, *args, **kwargs)

    monkeypatch.setattr(Client, "predict_patient", slow_predict)
    codes = {}
    with ScriptedServer([(200, {}, MODEL), (200, {}, _predict_body("P0"))]) as srv:
        args = [*_score_args(tmp_path, bags, out), "--url", srv.url]
        first = threading.Thread(target=lambda: codes.setdefault("first", main(args, env=env)))
        first.start()
        assert started.wait(10)  # the first run holds the output and is scoring
        requests_before = len(srv.requests)
        codes["second"] = main(args, env=env)
        assert len(srv.requests) == requests_before  # refused before asking the service anything
        release.set()
        first.join(10)
    err = capsys.readouterr().err
    assert codes == {"first": 0, "second": 2}
    assert f"another steph-client run is writing the output {out}" in err
    assert [r["patient_id"] for r in csv.DictReader(out.open())] == ["P0", "P1", "P2"]
    assert not (tmp_path / "scores.csv.lock").exists()  # released and removed


def test_the_output_lock_is_released_on_ctrl_c_and_errors(tmp_path, capsys, monkeypatch):
    from app.client import commands
    from app.client.lock import exclusive

    bags = tmp_path / "bags"
    bags.mkdir()
    (bags / "P1.h5").write_bytes(b"x")
    out = tmp_path / "scores.csv"
    env = {**ENV_OK, "XDG_CONFIG_HOME": str(tmp_path)}

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "run_scoring", interrupted)
    with ScriptedServer([(200, {}, MODEL)]) as srv:
        assert main([*_score_args(tmp_path, bags, out), "--url", srv.url], env=env) == 130
    with exclusive(out):  # free again
        pass
    with ScriptedServer([(404, {}, {"detail": "model 'mdl_1' not found"})]) as srv:
        assert main([*_score_args(tmp_path, bags, out), "--url", srv.url], env=env) == 2
    with exclusive(out):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bags"]
    capsys.readouterr()


def test_broken_links_fail_and_non_bags_are_reported_in_the_summary(tmp_path, capsys):
    bags = tmp_path / "bags"
    bags.mkdir()
    (bags / "A.h5").write_bytes(b"x")
    (bags / "E.h5").write_bytes(b"")
    (bags / "C.h5").symlink_to("/nonexistent/C.h5")
    for name in ("notes.txt", "labels.csv", "a.json", "b.log", "c.xml", "d.doc"):
        (bags / name).write_text("not a bag")
    out = tmp_path / "scores.csv"
    env = {**ENV_OK, "XDG_CONFIG_HOME": str(tmp_path)}
    with ScriptedServer([(200, {}, MODEL), (200, {}, _predict_body("A"))]) as srv:
        code = main([*_score_args(tmp_path, bags, out), "--url", srv.url], env=env)
        sent = [p for _, p, _, _ in srv.requests if "predict" in p]
        assert len(sent) == 1 and sent[0].endswith("filename=A.h5")  # only the good bag is sent
    err = capsys.readouterr().err
    assert code == 1
    assert "scored 1, skipped 0 (already in output), failed 2, of 3 patients" in err
    assert "skipped 6 files that are not bags: a.json, b.log, c.xml, d.doc, labels.csv, …" in err
    errors = {e["patient_id"]: e["message"] for e in csv.DictReader((tmp_path / "scores.errors.csv").open())}
    assert errors == {
        "C": "C.h5 is a broken symbolic link (its target /nonexistent/C.h5 does not exist)",
        "E": "E.h5: the file is empty (0 bytes)",
    }
