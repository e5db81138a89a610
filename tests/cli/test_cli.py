"""`steph` engine commands on the files `steph synth` writes, run in-process through main([...])."""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path

import h5py
import pytest
import torch
from safetensors.torch import load_file

from app.domain.mil import infer_dims, reference_shapes
from tests.cli.conftest import run_cli

CANCERS = ["BLCA", "BRCA", "CESC"]


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_synth_writes_the_documented_layout(tiny_world):
    root = tiny_world.root
    assert tiny_world.summary["target"] == "BLCA" and tiny_world.summary["sources"] == ["BRCA", "CESC"]
    base = load_file(root / "base.safetensors")
    dims = infer_dims(base)
    assert (dims.in_dim, dims.hidden_dim, dims.attn_dim, dims.n_bins) == (16, 8, 4, 4)
    shapes = reference_shapes(dims)
    for cancer in CANCERS:
        ckpt = load_file(root / "checkpoints" / f"{cancer}.safetensors")
        assert {k: tuple(v.shape) for k, v in ckpt.items()} == shapes
        assert not torch.equal(ckpt["feat_proj.0.weight"], base["feat_proj.0.weight"])  # trained from θ₀
        rows = read_csv(root / "cohorts" / cancer / "labels.csv")
        assert rows[0] == ["patient_id", "pathology_id", "project", "t", "e"]
        patients = {r[0] for r in rows[1:]}
        assert len(patients) == (20 if cancer == "BLCA" else 24)
        assert len(rows) - 1 > len(patients)  # some patients have two slides
        for pid, slide, project, t, e in rows[1:]:
            assert project == cancer and float(t) >= 1.0 and e in ("0", "1") and slide.startswith(pid)
            with h5py.File(root / "cohorts" / cancer / "bags" / f"{slide}.h5") as fh:
                feats, coords = fh["features"], fh["coords"]
                assert feats.dtype == "float32" and feats.shape[1] == 16 and 2 <= feats.shape[0] <= 24
                assert coords.shape == (feats.shape[0], 2) and coords.dtype.kind == "i"
        splits = read_csv(root / "cohorts" / cancer / "splits.csv")
        assert splits[0] == ["train", "test"]
        train = {r[0] for r in splits[1:] if r[0]}
        test = {r[1] for r in splits[1:] if r[1]}
        assert not train & test and train | test == patients and "" in {c for r in splits[1:] for c in r}


def test_train_writes_a_checkpoint_from_the_base(tiny_world, tmp_path, capsys):
    out = tmp_path / "ckpt" / "BLCA2.safetensors"
    res = run_cli(capsys, "train", "--base", tiny_world.base, "--cohort", tiny_world.cohort("BLCA"),
                  "--out", str(out), "--epochs", "1", "--accum", "4", "--lr", "1e-3")  # fmt: skip
    assert res.code == 0, res.err
    doc = res.json()
    n_train = len([r for r in read_csv(Path(tiny_world.cohort("BLCA")) / "splits.csv")[1:] if r[0]])
    assert doc["patients"] == n_train and doc["split"] == "train"
    assert doc["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    state, base = load_file(out), load_file(tiny_world.base)
    assert set(state) == set(base)
    assert not torch.equal(state["pred_head.weight"], base["pred_head.weight"])


def test_merge_steph_and_average_summaries(merged_models, tiny_world):
    n_test = len([r for r in read_csv(Path(tiny_world.cohort("BLCA")) / "splits.csv")[1:] if r[1]])
    for method, doc in merged_models.items():
        assert doc["method"] == method and doc["target"] == "BLCA" and doc["sources"] == ["BRCA", "CESC"]
        path = Path(doc["artifact"]["path"])
        assert doc["artifact"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        comp = doc["comparison"]
        assert comp["patients"] == n_test
        c_values = [v for k, v in comp.items() if "c_index" in k and isinstance(v, float)]
        assert len(c_values) >= 2 and all(0.0 <= v <= 1.0 for v in c_values)
        assert doc["train"]["steps"] > 0 and math.isfinite(doc["train"]["final_loss"])
    assert merged_models["steph"]["params"]["topk"] == 1


def test_evaluate_matches_the_merge_comparison(merged_models, tiny_world, capsys):
    doc = merged_models["steph"]
    res = run_cli(capsys, "evaluate", "--model", doc["artifact"]["path"], "--cohort", tiny_world.cohort("BLCA"))
    assert res.code == 0, res.err
    ev = res.json()
    assert ev["patients"] == doc["comparison"]["patients"] and ev["pairs"] > 0
    assert 0.0 <= ev["c_index"] <= 1.0
    assert ev["c_index"] in [v for v in doc["comparison"].values() if isinstance(v, float)]
    ref = run_cli(capsys, "evaluate", "--model", tiny_world.ckpt("BLCA"), "--cohort", tiny_world.cohort("BLCA"))
    assert ref.code == 0, ref.err
    assert ref.json()["c_index"] in [v for v in doc["comparison"].values() if isinstance(v, float)]


def test_predict_steph_lists_sources_per_bag(merged_models, tiny_world, capsys):
    bags = sorted((Path(tiny_world.cohort("BLCA")) / "bags").glob("*.h5"))[:2]
    res = run_cli(capsys, "predict", "--model", merged_models["steph"]["artifact"]["path"], *map(str, bags))
    assert res.code == 0, res.err
    lines = res.lines()
    assert [d["bag"] for d in lines] == [b.name for b in bags]
    for doc in lines:
        assert math.isfinite(doc["risk"]) and -4.0 <= doc["risk"] <= 0.0
        probs = doc["survival"]["probabilities"]
        assert doc["survival"]["times_days"] == [0.0, 365.0, 730.0, 1095.0, 1460.0] and len(probs) == 5
        assert probs[0] == 1.0  # S(0) = 1 at day 0, as POST /predict returns it
        assert all(1.0 >= a >= b >= 0.0 for a, b in zip(probs, probs[1:], strict=False))
        assert doc["risk"] == pytest.approx(-sum(probs[1:]), abs=1e-5)  # risk = −Σ_j S_j over the bins
        assert len(doc["sources"]) == 1  # --topk 1
        src = doc["sources"][0]
        assert src["name"] in ("BRCA", "CESC") and src["weight"] >= 0.0 and 0.0 < src["lam"] <= 1.0
    again = run_cli(capsys, "predict", "--model", merged_models["steph"]["artifact"]["path"], str(bags[0]))
    assert again.lines()[0]["risk"] == lines[0]["risk"]


def test_predict_with_a_plain_checkpoint_has_no_sources(tiny_world, capsys):
    bag = sorted((Path(tiny_world.cohort("BRCA")) / "bags").glob("*.h5"))[0]
    res = run_cli(capsys, "predict", "--model", tiny_world.ckpt("BRCA"), str(bag))
    assert res.code == 0, res.err
    doc = res.lines()[0]
    assert "sources" not in doc and math.isfinite(doc["risk"])


def test_predict_and_report_never_print_nan(merged_models, tiny_world, tmp_path, capsys):
    """A bag whose finite values overflow the forward, and a checkpoint holding NaN: exit 2 with a one-line
    reason, never `"risk": NaN` with exit 0."""
    import numpy as np
    from safetensors.torch import save_file

    dim = infer_dims(load_file(tiny_world.ckpt("BLCA"))).in_dim
    np.save(tmp_path / "overflow.npy", np.full((20, dim), 1e30, np.float32))
    res = run_cli(capsys, "predict", "--model", merged_models["steph"]["artifact"]["path"],
                  str(tmp_path / "overflow.npy"))  # fmt: skip
    assert res.code == 2 and "overflow.npy: the model's output is not finite" in res.err and "NaN" not in res.out
    state = load_file(tiny_world.ckpt("BLCA"))
    state["feat_proj.0.weight"][0, 0] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"))
    bag = sorted((Path(tiny_world.cohort("BLCA")) / "bags").glob("*.h5"))[0]
    res = run_cli(capsys, "predict", "--model", str(tmp_path / "nan.safetensors"), str(bag))
    assert res.code == 2 and "'feat_proj.0.weight' holds 1 non-finite" in res.err and not res.out
    res = run_cli(capsys, "report", "--model", merged_models["steph"]["artifact"]["path"], "--target",
                  str(tmp_path / "nan.safetensors"), "--cohort", tiny_world.cohort("BLCA"), "--out",
                  str(tmp_path / "r.html"), "--bootstrap", "10")  # fmt: skip
    assert res.code == 2 and "nan.safetensors" in res.err and "non-finite" in res.err


def test_reference_pth_target_works(tiny_world, tmp_path, capsys):
    pth = tmp_path / "BLCA_ref.pth"
    torch.save({"model": load_file(tiny_world.ckpt("BLCA")), "epoch": 3}, pth)
    out = tmp_path / "avg_from_pth.safetensors"
    res = run_cli(capsys, "merge", "--method", "average", "--base", tiny_world.base, "--target", str(pth),
                  "--source", tiny_world.ckpt("BRCA"), "--cohort", tiny_world.cohort("BLCA"),
                  "--out", str(out), "--epochs", "1", "--accum", "4")  # fmt: skip
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["target"] == "BLCA_ref" and doc["sources"] == ["BRCA"] and out.is_file()
    ev = run_cli(capsys, "evaluate", "--model", str(pth), "--cohort", tiny_world.cohort("BLCA"))
    direct = run_cli(capsys, "evaluate", "--model", tiny_world.ckpt("BLCA"), "--cohort", tiny_world.cohort("BLCA"))
    assert ev.code == 0 and ev.json() == direct.json()


def test_methods_lists_every_method_with_params(capsys):
    res = run_cli(capsys, "methods")
    assert res.code == 0
    methods = {m["name"]: m for m in res.json()}
    assert {"steph", "average", "task_arithmetic", "ties", "learned_weights", "routing"} <= set(methods)
    assert "topk" in {p["name"] for p in methods["steph"]["params"]}


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["evaluate", "--model", "missing.safetensors", "--cohort", "."], "missing.safetensors"),
        (["predict", "--model", "{ckpt}", "{bad_bag}"], "bad.h5"),
        (["merge", "--method", "nope", "--base", "{base}", "--target", "{ckpt}", "--source", "{ckpt}",
          "--cohort", "{cohort}", "--out", "{out}"], "nope"),
        (["merge", "--method", "steph", "--base", "{base}", "--target", "{ckpt}", "--source", "{ckpt}",
          "--cohort", "{cohort}", "--out", "{out}", "--param", "no_such=1"], "no_such"),
        (["train", "--base", "{garbage}", "--cohort", "{cohort}", "--out", "{out}"], "garbage.safetensors"),
    ],
)  # fmt: skip
def test_user_errors_exit_2_with_one_line(tiny_world, tmp_path, capsys, argv, fragment):
    bad_bag = tmp_path / "bad.h5"
    with h5py.File(bad_bag, "w") as fh:
        fh.create_dataset("features", data=torch.zeros(3, 7).numpy())  # wrong D
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    subs = {"{ckpt}": tiny_world.ckpt("BLCA"), "{bad_bag}": str(bad_bag), "{base}": tiny_world.base,
            "{cohort}": tiny_world.cohort("BLCA"), "{out}": str(tmp_path / "m.safetensors"),
            "{garbage}": str(garbage)}  # fmt: skip
    res = run_cli(capsys, *[subs.get(a, a) for a in argv])
    assert res.code == 2, res.err
    assert fragment in res.err and "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) == 1 and res.out == ""


@pytest.mark.parametrize("command", ["synth", "train", "merge", "evaluate", "predict", "methods"])
def test_every_command_has_help(command, capsys):
    from app.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"steph {command}" in capsys.readouterr().out


def test_topk_all_keeps_every_source_and_bad_topk_is_a_usage_error(tiny_world, tmp_path, capsys):
    out = tmp_path / "steph_all.safetensors"
    common = ["merge", "--method", "steph", "--base", tiny_world.base, "--target", tiny_world.ckpt("BLCA"),
              "--source", tiny_world.ckpt("BRCA"), tiny_world.ckpt("CESC"),
              "--cohort", tiny_world.cohort("BLCA"), "--out", str(out),
              "--epochs", "1", "--accum", "4"]  # fmt: skip
    res = run_cli(capsys, *common, "--topk", "all")
    assert res.code == 0, res.err
    assert res.json()["params"]["topk"] is None
    bag = sorted((Path(tiny_world.cohort("BLCA")) / "bags").glob("*.h5"))[0]
    pred = run_cli(capsys, "predict", "--model", str(out), str(bag)).lines()[0]
    assert sorted(s["name"] for s in pred["sources"]) == ["BRCA", "CESC"]
    assert [s["weight"] for s in pred["sources"]] == sorted((s["weight"] for s in pred["sources"]), reverse=True)
    with pytest.raises(SystemExit) as exc:
        run_cli(capsys, *common, "--topk", "x")
    assert exc.value.code == 2 and "integer or 'all'" in capsys.readouterr().err


def test_evaluate_split_all_and_missing_splits(tiny_world, tmp_path, capsys):
    brca = tiny_world.cohort("BRCA")
    res = run_cli(capsys, "evaluate", "--model", tiny_world.ckpt("BRCA"), "--cohort", brca, "--split", "all")
    assert res.code == 0, res.err
    assert res.json()["patients"] == 24
    nosplit = tmp_path / "nosplit"
    nosplit.mkdir()
    (nosplit / "labels.csv").write_text((Path(tiny_world.cohort("BRCA")) / "labels.csv").read_text())
    res = run_cli(capsys, "evaluate", "--model", tiny_world.ckpt("BRCA"), "--cohort", str(nosplit))
    assert res.code == 2 and "no splits.csv" in res.err


def test_merge_refuses_a_checkpoint_trained_from_another_base(tiny_world, tmp_path, capsys):
    from safetensors.torch import save_file

    base = load_file(tiny_world.base)
    gen = torch.Generator().manual_seed(0)  # another initialisation of the same family (same shapes and dtypes)
    foreign = {k: (v.std() if v.numel() > 1 else 0.1) * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    save_file({k: v.contiguous() for k, v in foreign.items()}, tmp_path / "KIRC_other.safetensors")
    argv = ["merge", "--method", "average", "--base", tiny_world.base, "--target", tiny_world.ckpt("BLCA"),
            "--source", str(tmp_path / "KIRC_other.safetensors"), "--cohort", tiny_world.cohort("BLCA"),
            "--out", str(tmp_path / "m.safetensors"), "--epochs", "1", "--accum", "4"]  # fmt: skip
    res = run_cli(capsys, *argv)
    assert res.code == 2 and "KIRC_other.safetensors does not look trained from this base" in res.err
    assert "Traceback" not in res.err and not (tmp_path / "m.safetensors").exists()
    res = run_cli(capsys, *argv, "--min-base-retention", "-1")  # the user's explicit override
    assert res.code == 0, res.err
