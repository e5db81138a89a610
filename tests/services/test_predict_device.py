"""The prediction device (STEPH_PREDICT_DEVICE): resolved once, checked at start-up, models cached on it, and on
a GPU the same answers as on the CPU (that last test runs only where a CUDA device is visible)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.services import merge_jobs as mj
from app.services.errors import ServiceUnavailable
from app.services.model_cache import ModelCache, get_model_cache, resolve_predict_device
from app.services.predict import BagFile, predict
from app.settings import Settings
from tests.fixtures import make_tiny_world, write_bag
from tests.workers.world import job_request, make_ctx, register_family


def test_auto_and_cpu_resolve_and_cuda_without_a_gpu_is_refused_with_the_fix(monkeypatch):
    assert resolve_predict_device(SimpleNamespace(predict_device="cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_predict_device(SimpleNamespace(predict_device="auto")).type == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_predict_device(SimpleNamespace(predict_device="auto")) == torch.device("cpu")
    with pytest.raises(ServiceUnavailable, match="STEPH_PREDICT_DEVICE=cuda but this process sees no CUDA GPU"):
        resolve_predict_device(SimpleNamespace(predict_device="cuda"))


def test_the_server_refuses_to_start_on_a_missing_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    settings = Settings(home=tmp_path / "h", predict_device="cuda")
    with pytest.raises(ServiceUnavailable, match="set STEPH_PREDICT_DEVICE=cpu or auto"):
        with TestClient(create_app(settings)):
            pass


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("predict_device")
    world = make_tiny_world(root / "world")
    ctx = make_ctx(root, predict_device="cpu", inference_dtype="float32")
    fam = register_family(ctx, world)
    job, _ = mj.submit_merge_job(ctx=ctx, request=job_request(fam))
    mj.run_merge_job(ctx=ctx, job_id=job["id"])
    model_id = mj.get_job(ctx=ctx, job_id=job["id"])["model_id"]
    assert model_id
    bag = BagFile(name="slide.h5", path=write_bag(root / "slide.h5", 30, 16, seed=9))
    yield ctx, model_id, bag
    ctx.close()


def test_the_cache_holds_models_on_the_prediction_device(scored):
    ctx, model_id, bag = scored
    out = predict(ctx=ctx, model_id=model_id, files=[bag], top_patches=3)
    cache = get_model_cache(ctx)
    assert cache.device == torch.device("cpu") and len(cache) == 1
    (loaded,) = cache._items.values()
    assert {t.device.type for t in (*loaded.model.parameters(), *loaded.model.buffers())} == {"cpu"}
    assert out["results"][0]["n_patches"] == 30 and len(out["results"][0]["top_patches"]) == 3
    # another device really is where a cache keeps its models: "meta" (shapes only) stands in for a GPU here
    elsewhere = ModelCache(ctx.store, 1, torch.device("meta")).get(out["model_sha256"]).model
    assert {t.device.type for t in (*elsewhere.parameters(), *elsewhere.buffers())} == {"meta"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_gives_the_cpu_answers(scored):
    ctx, model_id, bag = scored
    ref = predict(ctx=ctx, model_id=model_id, files=[bag], top_patches=3)["results"][0]
    original = ctx.extras.pop("model_cache")
    try:
        ctx.extras["model_cache"] = ModelCache(ctx.store, 2, torch.device("cuda"))
        got = predict(ctx=ctx, model_id=model_id, files=[bag], top_patches=3)["results"][0]
    finally:
        ctx.extras["model_cache"] = original
    assert abs(got["risk"] - ref["risk"]) < 1e-4
    assert [p["index"] for p in got["top_patches"]] == [p["index"] for p in ref["top_patches"]]
    assert max(abs(a - b) for a, b in zip(got["hazards"], ref["hazards"], strict=True)) < 1e-4
