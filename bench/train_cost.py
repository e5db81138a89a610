"""Training cost per bag: how long does one merge job take, per method, at realistic sizes?

    python -m bench.train_cost [--quick] [--ns 2000 10000] [--sources 12] [--repeats 5]

Same models as bench.inference_cost (random θ₀ and task vectors, D = 1536 → 512 → 384, 32 bins, M = 12 sources),
but in train mode and with gradients: one bag's forward pass, the loss the training loop uses (discrete-time NLL
with α = 0.5 + the method's aux loss) and the backward pass. The optimiser step itself (AdamW over the trainable
parameters, once per `accum` bags) is timed separately, since a job runs it once per group of bags.

- cancer_specific: every ABMIL parameter trains (what `steph train` and the synthetic checkpoints do);
- head_only: a static merge with `retrain_head` (average / task_arithmetic / ties): only the fresh head trains;
- steph, learned_weights, routing (top-k 5): the learned merges, exactly as a merge job trains them.

Timing is round-robin over the models with a rotating start (noise hits every model alike); median ms per bag and
the ratio to cancer_specific in the same run. A merge job's training time ≈ epochs × patients × (median per bag)
+ epochs × ceil(patients / accum) × (optimiser step), plus reading the bags. Output: a markdown section on stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from app.domain.merging.base import StaticModel, SurvivalModel
from app.domain.merging.registry import get_method
from app.domain.mil import FamilyDims
from app.domain.survival import nll_loss
from app.domain.training import TrainConfig, make_optimizer
from bench.inference_cost import random_inputs

MODELS: list[tuple[str, str]] = [
    ("cancer_specific", "cancer-specific ABMIL (all parameters)"),
    ("head_only", "static merge, retrain_head (head only)"),
    ("steph", "steph (top-k 5)"),
    ("learned_weights", "learned_weights"),
    ("routing", "routing (top-k 5)"),
]


def build(key: str, inputs: Any, seed: int = 0) -> SurvivalModel:
    if key == "cancer_specific":
        return StaticModel(inputs.target, inputs.dims, inputs.bin_edges, train_head_only=False)
    if key == "head_only":
        return StaticModel(inputs.target, inputs.dims, inputs.bin_edges, train_head_only=True)
    method = get_method(key)
    return method.build(inputs, method.parse_params({}), seed=seed)


def step_calls(models: dict[str, SurvivalModel], bag: torch.Tensor) -> dict[str, Callable[[], float]]:
    """Per model: forward + loss + backward on `bag` (grads are zeroed first, as a fresh group would)."""
    bins, events = torch.tensor([3]), torch.tensor([1])

    def call(model: SurvivalModel) -> float:
        model.zero_grad(set_to_none=True)
        out = model(bag)
        loss = nll_loss(out.logits.unsqueeze(0), bins, events, alpha=0.5) + out.aux_loss
        loss.backward()
        return float(loss.detach())

    return {key: (lambda m=model: call(m)) for key, model in models.items()}


def measure(ns: list[int], n_sources: int, repeats: int, dims: FamilyDims, seed: int = 0) -> list[dict[str, Any]]:
    inputs = random_inputs(dims, n_sources, seed=seed)
    models = {key: build(key, inputs, seed).train() for key, _ in MODELS}
    rows: list[dict[str, Any]] = []
    for n in ns:
        bag = torch.randn(n, dims.in_dim, generator=torch.Generator().manual_seed(seed + n))
        calls = step_calls(models, bag)
        for fn in calls.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in calls}
        keys = list(calls)
        for r in range(repeats):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                t0 = time.perf_counter()
                calls[key]()
                times[key].append((time.perf_counter() - t0) * 1000)
        ref = statistics.median(times["cancer_specific"])
        for key, label in MODELS:
            med = statistics.median(times[key])
            rows.append({"n": n, "key": key, "label": label, "median_ms": med, "ratio": med / ref})
    for key, label in MODELS:  # one AdamW step over the trainable parameters, after a backward pass
        model = models[key]
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make_optimizer(params, TrainConfig(lr=1e-4))
        step_calls({key: model}, torch.randn(ns[0], dims.in_dim))[key]()
        samples = []
        for _ in range(max(3, repeats)):
            t0 = time.perf_counter()
            opt.step()
            samples.append((time.perf_counter() - t0) * 1000)
        rows.append({"n": None, "key": key, "label": label, "median_ms": statistics.median(samples),
                     "trainable": sum(p.numel() for p in params)})  # fmt: skip
    return rows


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    ns = sorted({r["n"] for r in rows if r["n"] is not None})
    head = "| method | trainable parameters | AdamW step (ms) | " + " | ".join(
        f"N = {n:,}: ms per bag (× cancer-specific)" for n in ns
    )
    lines = [head + " |", "|---|---:|---:|" + "---:|" * len(ns)]
    for key, label in MODELS:
        opt = next(r for r in rows if r["key"] == key and r["n"] is None)
        cells = []
        for n in ns:
            r = next(r for r in rows if r["key"] == key and r["n"] == n)
            cells.append(f"{r['median_ms']:,.0f} ({r['ratio']:.2f})")
        lines.append(f"| {label} | {opt['trainable']:,} | {opt['median_ms']:.1f} | " + " | ".join(cells) + " |")
    return (
        f"Command: `{meta['command']}`  \nMachine: `{meta['machine']}`, {meta['cpus']} CPUs, torch "
        f"{meta['torch']}, {meta['threads']} thread(s); D = {meta['dim']}, {meta['sources']} sources, "
        f"{meta['repeats']} repeats per N, wall time {meta['wall_s']:.0f} s.\n\n" + "\n".join(lines) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny dims, 2 repeats (a smoke run)")
    p.add_argument("--ns", type=int, nargs="+", default=[2000, 10000])
    p.add_argument("--sources", type=int, default=12)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    dims = FamilyDims(in_dim=1536, hidden_dim=512, attn_dim=384, n_bins=32)
    ns, repeats = args.ns, args.repeats
    if args.quick:
        dims, ns, repeats = FamilyDims(in_dim=32, hidden_dim=16, attn_dim=8, n_bins=4), [50, 100], 2
    t0 = time.perf_counter()
    rows = measure(ns, args.sources, repeats, dims)
    meta = {
        "command": "python -m bench.train_cost " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": " ".join(platform.uname()[:3] + (platform.machine(),)),
        "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "dim": dims.in_dim, "sources": args.sources, "repeats": repeats, "wall_s": time.perf_counter() - t0,
    }  # fmt: skip
    print(render(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
