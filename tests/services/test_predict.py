"""Prediction service: per-patient results match the model, grouping, top patches, bad inputs, model cache."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from app.io.errors import InputFileError
from app.services import merge_jobs as mj
from app.services.errors import NotFound, PayloadTooLarge, UnprocessableInput
from app.services.model_cache import get_model_cache
from app.services.predict import BagFile, predict
from tests.fixtures import TinyWorld, make_tiny_world, write_bag
from tests.workers.world import job_request, make_ctx, register_family


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("predict")
    world: TinyWorld = make_tiny_world(root / "world")
    ctx = make_ctx(root, max_patches=100, max_bags_per_request=3)
    fam = register_family(ctx, world)
    job, _ = mj.submit_merge_job(ctx=ctx, request=job_request(fam))
    mj.run_merge_job(ctx=ctx, job_id=job["id"])
    model_id = mj.get_job(ctx=ctx, job_id=job["id"])["model_id"]
    assert model_id, mj.get_job(ctx=ctx, job_id=job["id"])["error"]
    bags = root / "bags"
    files = {
        "a": write_bag(bags / "slideA.h5", 12, 16, seed=1),
        "b": write_bag(bags / "slideB.h5", 7, 16, seed=2),
        "wrong_d": write_bag(bags / "wide.h5", 5, 17, seed=3),
        "nan": write_bag(bags / "nan.h5", 5, 16, seed=4, nan=True),
        "big": write_bag(bags / "big.h5", 101, 16, seed=5),
        "half": write_bag(bags / "half.h5", 60, 16, seed=6),
    }
    (bags / "empty.npy").write_bytes(b"")
    (bags / "notes.txt").write_bytes(b"hello, not a bag")
    files["empty"], files["garbage"] = bags / "empty.npy", bags / "notes.txt"
    yield ctx, model_id, files
    ctx.close()


def bf(path: Path, name: str | None = None) -> BagFile:
    return BagFile(name=name or path.name, path=path)


def features(path: Path) -> torch.Tensor:
    with h5py.File(path, "r") as f:
        return torch.from_numpy(np.asarray(f["features"]))


def test_one_file_is_one_patient_and_matches_the_model(setup) -> None:
    ctx, model_id, files = setup
    out = predict(ctx=ctx, model_id=model_id, files=[bf(files["a"])])
    assert out["model_id"] == model_id and out["method"] == "steph" and len(out["model_sha256"]) == 64
    (res,) = out["results"]
    assert res["patient_id"] == "slideA" and res["files"] == ["slideA.h5"] and res["n_patches"] == 12
    model = get_model_cache(ctx).get(out["model_sha256"]).model
    with torch.no_grad():
        logits = model(features(files["a"])).logits
    surv = torch.cumprod(1 - torch.sigmoid(logits), 0)
    assert res["risk"] == pytest.approx(-float(surv.sum()), abs=1e-6)
    assert res["survival"]["times_days"] == [0.0, 365.0, 730.0, 1095.0, 1460.0]
    probs = res["survival"]["probabilities"]
    assert probs[0] == 1.0 and probs[1:] == pytest.approx(surv.tolist(), abs=1e-6)
    assert res["hazards"] == pytest.approx(torch.sigmoid(logits).tolist(), abs=1e-6)
    cancers = [s["cancer"] for s in res["sources"]]
    assert 1 <= len(cancers) <= 2 and set(cancers) <= {"luad", "kirc"}
    weights = [s["weight"] for s in res["sources"]]
    assert weights == sorted(weights, reverse=True) and all(0 < s["lam"] <= 1 for s in res["sources"])
    assert res["top_patches"] is None


def test_several_slides_of_one_patient_are_concatenated(setup) -> None:
    ctx, model_id, files = setup
    out = predict(ctx=ctx, model_id=model_id, files=[bf(files["a"]), bf(files["b"])], patient_ids=["P9"])
    (res,) = out["results"]
    assert res["patient_id"] == "P9" and res["n_patches"] == 19 and res["files"] == ["slideA.h5", "slideB.h5"]
    model = get_model_cache(ctx).get(out["model_sha256"]).model
    with torch.no_grad():
        logits = model(torch.cat([features(files["a"]), features(files["b"])])).logits
    assert res["risk"] == pytest.approx(-float(torch.cumprod(1 - torch.sigmoid(logits), 0).sum()), abs=1e-6)
    two = predict(ctx=ctx, model_id=model_id, files=[bf(files["a"]), bf(files["b"])], patient_ids=["X", "Y"])
    assert [r["patient_id"] for r in two["results"]] == ["X", "Y"]
    with pytest.raises(UnprocessableInput, match="2 patient ids for 3 files"):
        predict(ctx=ctx, model_id=model_id, files=[bf(files["a"])] * 3, patient_ids=["X", "Y"])


def test_top_patches_are_the_highest_attention_rows_with_coords(setup) -> None:
    ctx, model_id, files = setup
    out = predict(ctx=ctx, model_id=model_id, files=[bf(files["a"]), bf(files["b"])], patient_ids=["P"], top_patches=25)
    top = out["results"][0]["top_patches"]
    assert len(top) == 19  # capped at N
    att = [t["attention"] for t in top]
    assert att == sorted(att, reverse=True) and sum(att) == pytest.approx(1.0, abs=1e-5)
    with h5py.File(files["b"], "r") as f:
        coords_b = np.asarray(f["coords"]).tolist()
    for t in top:
        assert t["file"] == ("slideA.h5" if t["index"] < 12 else "slideB.h5")
        assert t["file_index"] == (t["index"] if t["index"] < 12 else t["index"] - 12)
        if t["file"] == "slideB.h5":
            assert t["coords"] == coords_b[t["file_index"]]


@pytest.mark.parametrize(
    ("key", "needles"),
    [
        ("wrong_d", ("wide.h5", "16")),
        ("nan", ("nan.h5", "nan")),
        ("empty", ("empty.npy",)),
        ("garbage", ("notes.txt",)),
        ("big", ("big.h5", "100")),
    ],
)
def test_bad_bags_name_the_file_and_the_problem(setup, key, needles) -> None:
    ctx, model_id, files = setup
    with pytest.raises((InputFileError, PayloadTooLarge)) as info:
        predict(ctx=ctx, model_id=model_id, files=[bf(files["a"]), bf(files[key])], patient_ids=["A", "B"])
    for needle in needles:
        assert needle.lower() in str(info.value).lower()
    assert "/tmp" not in str(info.value)


def test_limits_and_unknown_model(setup) -> None:
    ctx, model_id, files = setup
    with pytest.raises(PayloadTooLarge, match="120 patches"):
        predict(
            ctx=ctx,
            model_id=model_id,
            files=[bf(files["half"]), bf(files["half"], "h2.h5")],
            patient_ids=["P"],
        )
    with pytest.raises(PayloadTooLarge, match="at most 3"):
        predict(ctx=ctx, model_id=model_id, files=[bf(files["a"])] * 4)
    with pytest.raises(UnprocessableInput, match="no bag files"):
        predict(ctx=ctx, model_id=model_id, files=[])
    with pytest.raises(NotFound, match="model_missing"):
        predict(ctx=ctx, model_id="model_missing", files=[bf(files["a"])])


def test_the_model_is_loaded_once_and_a_corrupt_artifact_is_refused(setup, tmp_path) -> None:
    from app.services.model_cache import ModelCache
    from app.storage.store import StoreError

    ctx, model_id, files = setup
    cache = get_model_cache(ctx)
    predict(ctx=ctx, model_id=model_id, files=[bf(files["a"])])
    loads = cache.loads
    predict(ctx=ctx, model_id=model_id, files=[bf(files["b"])])
    assert cache.loads == loads and loads >= 1

    sha = predict(ctx=ctx, model_id=model_id, files=[bf(files["a"])])["model_sha256"]
    path = ctx.store.path(sha)
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-8] + b"\x00" * 8)
        with pytest.raises((StoreError, InputFileError), match="corrupt"):
            ModelCache(ctx.store).get(sha)
    finally:
        path.write_bytes(original)


def test_the_cache_trims_the_heap_after_a_load_not_after_a_hit(setup, monkeypatch) -> None:
    import app.services.model_cache as mc

    ctx, model_id, files = setup
    trims: list[int] = []
    monkeypatch.setattr(mc, "trim_heap", lambda: trims.append(1) or True)
    cache = mc.ModelCache(ctx.store, capacity=1)
    sha = predict(ctx=ctx, model_id=model_id, files=[bf(files["a"])])["model_sha256"]
    first = cache.get(sha)
    assert (cache.loads, len(trims)) == (1, 1)
    assert cache.get(sha) is first and (cache.loads, len(trims)) == (1, 1)


def test_finite_but_huge_features_are_a_bad_bag_not_null_risks(setup, tmp_path) -> None:
    """Values near float32's limit pass the NaN/Inf check but overflow the forward: 422 naming the file and
    the magnitude, never a 200 whose risk is null."""
    ctx, model_id, files = setup
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=np.full((6, 16), 3e38, np.float32))
    with pytest.raises(InputFileError, match=r"huge\.h5: the model's output is not finite.*3e\+38"):
        predict(ctx=ctx, model_id=model_id, files=[bf(path)])
    ok = predict(ctx=ctx, model_id=model_id, files=[bf(files["a"])])["results"][0]
    assert np.isfinite(ok["risk"])


def test_a_model_that_outputs_nan_on_ordinary_features_is_blamed_not_the_bag(setup) -> None:
    import copy

    from app.io.errors import ArtifactError
    from app.services.predict import score_patient

    ctx, model_id, files = setup
    sha = predict(ctx=ctx, model_id=model_id, files=[bf(files["a"])])["model_sha256"]
    broken = copy.deepcopy(get_model_cache(ctx).get(sha).model)
    with torch.no_grad():
        for p in broken.parameters():
            p.fill_(float("nan"))
    with pytest.raises(ArtifactError, match="slideA.h5, whose features are ordinary.*re-run its merge job"):
        score_patient(broken, "P", [bf(files["a"])], ctx.settings, 0)
