"""bench.predict_load, parts 2 and 3: what reduced precision does to the C-index, and to the training cost.

bench world: a synthetic world (app.domain.synthetic) at the real feature width D = 1536 with 4 cancers; the
target has 60 train patients and 300 extra held-out test patients, the sources 80 patients each. θ₀ =
new_abmil(DIMS, 0); every cancer-specific model and the merges train in float32 with the same TrainConfig.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from app.domain.merging.base import SurvivalModel
from app.domain.merging.registry import get_method
from app.domain.metrics import harrell_c_index
from app.domain.mil import FamilyDims, new_abmil
from app.domain.survival import default_bin_edges, risk_score
from app.domain.synthetic import WorldConfig, make_world
from app.domain.training import TrainConfig, train, train_cancer_specific
from bench.train_cost import build, step_calls

DIMS = FamilyDims(in_dim=1536, hidden_dim=512, attn_dim=384, n_bins=32)
QUICK_DIMS = FamilyDims(in_dim=64, hidden_dim=32, attn_dim=16, n_bins=8)


def _risks(model: SurvivalModel, samples: list, dtype: torch.dtype) -> torch.Tensor:
    with torch.inference_mode():
        return torch.stack([risk_score(model(s.bag.to(dtype)).logits.float()) for s in samples])


def _world(quick: bool) -> tuple[Any, FamilyDims, TrainConfig]:
    dims = QUICK_DIMS if quick else DIMS
    sizes = {"patients": 30, "target_patients": 20, "target_test_patients": 40} if quick else {
        "patients": 80, "target_patients": 60, "target_test_patients": 300}  # fmt: skip
    config = WorldConfig(cancers=4, dim=dims.in_dim, patches=(16, 64), seed=0, **sizes)
    return make_world(config), dims, TrainConfig(epochs=8 if not quick else 2, accum=8, lr=5e-4, seed=1)


def _fit_world(world: Any, dims: FamilyDims, config: TrainConfig) -> dict[str, Any]:
    """θ₀, every cancer-specific model (float32), the merge inputs for the target."""
    from app.domain.merging.base import MergeInputs

    base = new_abmil(dims, 0).state_dict()
    edges = default_bin_edges(dims.n_bins, 365)
    fitted = {
        name: train_cancer_specific(base, cohort.samples("train"), config, dims=dims, bin_edges=edges)
        for name, cohort in world.cancers.items()
    }
    states = {name: m.artifact_tensors() for name, m in fitted.items()}
    sources = world.sources
    inputs = MergeInputs(base, states[world.target], [states[s] for s in sources], sources, world.target, dims, edges)
    return {"inputs": inputs, "target_model": fitted[world.target]}


def _merge(name: str, inputs: Any, samples: list, config: TrainConfig) -> SurvivalModel:
    method = get_method(name)
    model = method.build(inputs, method.parse_params({}), seed=0)
    train(model, samples, config)
    return model.eval()


def quality_rows(low: torch.dtype, *, quick: bool = False) -> dict[str, Any]:
    """C-index (float32 and `low` inference) and max |Δrisk| per model; STEPH trained with compute_dtype low."""
    t0 = time.perf_counter()
    world, dims, config = _world(quick)
    fit = _fit_world(world, dims, config)
    train_samples = world.cancers[world.target].samples("train")
    test = world.cancers[world.target].samples("test")
    time_, event = [s.time for s in test], [s.event for s in test]
    models = {"cancer_specific": fit["target_model"]}
    for name in ("steph", "routing"):
        models[name] = _merge(name, fit["inputs"], train_samples, config)
    rows = []
    for name, model in models.items():
        r32, rlow = _risks(model, test, torch.float32), _risks(model, test, low)
        c32, clow = harrell_c_index(time_, event, r32).c_index, harrell_c_index(time_, event, rlow).c_index
        drisk, spread = float((rlow - r32).abs().max()), float(r32.max() - r32.min())
        rows.append({"model": name, "c_fp32": c32, "c_low": clow, "delta_c": clow - c32,
                     "max_abs_drisk": drisk, "risk_range": spread})  # fmt: skip
    low_name = str(low).removeprefix("torch.")
    low_config = TrainConfig(**{**config.__dict__, "compute_dtype": low_name})
    steph_low = _merge("steph", fit["inputs"], train_samples, low_config)
    c_trained_low = harrell_c_index(time_, event, _risks(steph_low, test, torch.float32)).c_index
    return {"rows": rows, "steph_trained_low_c": c_trained_low, "n_test": len(test),
            "events_test": int(sum(event)), "dim": dims.in_dim, "epochs": config.epochs,
            "wall_s": time.perf_counter() - t0}  # fmt: skip


def train_cost_rows(low: torch.dtype, *, n: int = 10000, repeats: int = 5) -> dict[str, Any]:
    """Median ms per bag of forward + loss + backward (train mode): cancer-specific vs steph, float32 and low."""
    from bench.inference_cost import random_inputs

    inputs = random_inputs(DIMS, 12, seed=0)
    models = {key: build(key, inputs).train() for key in ("cancer_specific", "steph")}
    bag = torch.randn(n, DIMS.in_dim, generator=torch.Generator().manual_seed(3))
    calls = {}
    for dtype in (torch.float32, low):
        for key, fn in step_calls(models, bag.to(dtype)).items():
            calls[f"{key}|{str(dtype).removeprefix('torch.')}"] = fn
    times: dict[str, list[float]] = {k: [] for k in calls}
    for fn in calls.values():
        fn()
    keys = list(calls)
    for r in range(repeats):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            t0 = time.perf_counter()
            calls[key]()
            times[key].append((time.perf_counter() - t0) * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"n": n, "ms": med, "repeats": repeats}
