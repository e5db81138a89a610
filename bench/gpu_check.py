"""The CUDA path in one short run, for a session that is lent a GPU (issue 7: "fp16/bf16 on GPU").

    python -m bench.gpu_check [--out DIR] [--device cpu]   # writes DIR/gpu-check.json (default $OUT or bench/out)

(`--device cpu` is a dry run of the same code on the CPU: it checks the script, not the GPU.)

1. STEPH and an ABMIL on random inputs at D = 1536 (bench.predict_load.build_models): logits on cuda in float32,
   float16 and bfloat16 against the CPU float32 reference (max |Δlogit|), and ms per forward at N = 10 000 (cuda
   float32 / float16 / bfloat16, CPU float32 in the same run).
2. Training on cuda: a few steps of STEPH with `compute_dtype=auto` (bf16 where supported) on a random cohort; the
   loss must stay finite, the parameters must move. And the cost of one training bag (forward + loss + backward)
   at N patches: STEPH vs a cancer-specific ABMIL, float32 and the default dtype (the merge-epoch ratio).
3. The service's prediction path (app.services.predict.score_patient) with the model cache on cuda vs on the CPU:
   the same patient's risk, hazards and top patches.

It exits non-zero when any check fails. Meant for `run` on the device machine, e.g.
`python -m bench.gpu_check && python -m pytest -q tests/services/test_predict_device.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch


def _ms(fn: Any, repeats: int = 5) -> float:
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def forward_checks(device: str, n: int) -> dict[str, Any]:
    from bench.predict_load import DIMS, build_models

    gen = torch.Generator().manual_seed(0)
    bag = torch.randn(n, DIMS.in_dim, generator=gen)
    out: dict[str, Any] = {}
    for name, model in build_models(DIMS).items():
        if name == "routing":
            continue
        with torch.inference_mode():
            ref = model(bag).logits
            cpu_ms = _ms(lambda m=model: m(bag))
            gpu = model.to(device)
            row: dict[str, Any] = {"cpu_float32_ms": round(cpu_ms, 2)}
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                x = bag.to(device, dtype)
                logits = gpu(x).logits.float().cpu()
                key = str(dtype).removeprefix("torch.")
                row[f"{key}_max_abs_dlogit"] = float((logits - ref).abs().max())
                row[f"{device}_{key}_ms"] = round(_ms(lambda m=gpu, x=x: m(x)), 3)
            model.to("cpu")
        out[name] = row
    return out


def training_check(device: str) -> dict[str, Any]:
    from app.domain.data import Sample
    from app.domain.merging.registry import get_method
    from app.domain.training import TrainConfig, train
    from bench.inference_cost import random_inputs
    from bench.predict_load import DIMS

    inputs = random_inputs(DIMS, 4, seed=1)
    method = get_method("steph")
    model = method.build(inputs, method.parse_params({}), seed=1)
    gen = torch.Generator().manual_seed(2)
    samples = [
        Sample(f"p{i}", torch.randn(2_000, DIMS.in_dim, generator=gen), 100.0 + 50 * i, i % 2) for i in range(16)
    ]
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    config = TrainConfig(epochs=2, accum=4, lr=1e-3, device=device, compute_dtype="auto").resolved()
    t0 = time.perf_counter()
    result = train(model, samples, config)
    moved = sum(not torch.equal(before[k], v.detach().cpu()) for k, v in model.named_parameters() if k in before)
    return {"compute_dtype": config.compute_dtype, "steps": result.steps, "history": list(result.history),
            "finite": all(math.isfinite(x) for x in result.history),
            "parameters_moved": int(moved), "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip


def epoch_cost_check(device: str, n: int) -> dict[str, Any]:
    """Forward + loss + backward of one training bag on the device (what a merge epoch is made of): STEPH vs a
    cancer-specific ABMIL, each in float32 and in the training default (compute_dtype auto → bf16 where supported),
    ms and the ratio to the float32 cancer-specific bag (issue 7: a merge epoch ≤ 1.3× a cancer-specific one)."""
    from app.domain.precision import resolve_train_dtype
    from bench.inference_cost import random_inputs
    from bench.predict_load import DIMS
    from bench.train_cost import build, step_calls

    inputs = random_inputs(DIMS, 12, seed=5)
    models = {k: build(k, inputs).to(device).train() for k in ("cancer_specific", "steph")}
    low = resolve_train_dtype("auto", device)
    bag = torch.randn(n, DIMS.in_dim, generator=torch.Generator().manual_seed(6))
    out: dict[str, Any] = {"low_dtype": str(low).removeprefix("torch.")}
    for dtype in (torch.float32, low):
        calls = step_calls(models, bag.to(device, dtype))
        for key, call in calls.items():
            out[f"{key}_{str(dtype).removeprefix('torch.')}_ms"] = round(_ms(call), 2)
    ref = out["cancer_specific_float32_ms"]
    out["steph_float32_ratio"] = round(out["steph_float32_ms"] / ref, 3)
    out["steph_default_ratio"] = round(out[f"steph_{out['low_dtype']}_ms"] / ref, 3)
    return out


def service_check(device: str) -> dict[str, Any]:
    import tempfile

    from app.domain.merging.registry import get_method
    from app.services.predict import BagFile, score_patient
    from bench.inference_cost import random_inputs
    from bench.predict_load import DIMS, scoring_settings, write_fp16_bag

    inputs = random_inputs(DIMS, 4, seed=3)
    method = get_method("steph")
    model = method.build(inputs, method.parse_params({}), seed=3).eval()
    settings, auto_settings = scoring_settings("float32"), scoring_settings("auto")
    with tempfile.TemporaryDirectory() as tmp:
        bag_path = write_fp16_bag(Path(tmp) / "slide.h5", 5_000, DIMS.in_dim, seed=4)
        files = [BagFile(name="slide.h5", path=bag_path)]
        cpu = score_patient(model, "P1", files, settings, 5)
        on_device = model.to(device)  # where the model cache puts it (STEPH_PREDICT_DEVICE)
        gpu = score_patient(on_device, "P1", files, settings, 5)
        auto = score_patient(on_device, "P1", files, auto_settings, 5)
    return {
        "risk_cpu": cpu["risk"], "risk_device_float32": gpu["risk"], "risk_device_auto": auto["risk"],
        "max_abs_dhazard_float32": max(abs(a - b) for a, b in zip(cpu["hazards"], gpu["hazards"], strict=True)),
        "same_top_patches": [p["index"] for p in cpu["top_patches"]] == [p["index"] for p in gpu["top_patches"]],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench/out")))
    p.add_argument("--device", default="cuda", help="cpu = a dry run of this script on the CPU")
    p.add_argument("--n", type=int, default=10_000, help="patches per bag of the forward check")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible: nothing to check (--device cpu for a dry run)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    cuda = args.device == "cuda"
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)",
        "torch": torch.__version__,
        "bf16_supported": cuda and torch.cuda.is_bf16_supported(),
    }
    failures = []
    report["forward"] = forward_checks(args.device, args.n)
    for name, row in report["forward"].items():
        if row["float32_max_abs_dlogit"] > 1e-3 or row["bfloat16_max_abs_dlogit"] > 5e-2:
            failures.append(f"forward {name}: {row}")
    report["training"] = training_check(args.device)
    if not report["training"]["finite"] or report["training"]["parameters_moved"] == 0:
        failures.append(f"training: {report['training']}")
    report["epoch_cost"] = epoch_cost_check(args.device, args.n)
    report["service"] = service_check(args.device)
    svc = report["service"]
    if abs(svc["risk_cpu"] - svc["risk_device_float32"]) > 1e-3 or not svc["same_top_patches"]:
        failures.append(f"service: {svc}")
    report["failures"] = failures
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
