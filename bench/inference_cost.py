"""Inference cost per bag: is STEPH "at the cost of a single-model forward pass"?

    python -m bench.inference_cost [--quick] [--ns 1000 10000 50000] [--sources 12] [--no-memory]

Models are built through the merge registry from a random θ₀ (new_abmil) and random task vectors
(θ = θ₀ + 0.02 · N(0, 1)) with the realistic family dims (D = 1536 for UNI2-h, 1536 → 512 → 384, 32 bins) and
M = 12 sources; the weights are untrained, which does not change the cost (no method's compute depends on the
values, only top-k changes what runs and k is fixed). Every model runs in eval mode under
torch.inference_mode() on the same random bag [N, D]:

- abmil: one cancer-specific ABMIL (a StaticModel): the reference "single-model forward pass";
- steph (top-k 5) and steph (top-k all): hypernetwork + per-bag merge of the encoder + merged forward;
- learned_weights: one global merge (recomputed at every forward call) + forward;
- routing (top-k all): ROUPKT as in the paper, every source expert and the target's run on every bag, plus the
  router ABMIL; routing (top-k 5) is the service's default;
- ensemble: steph (top-k 5) plus every source's own ABMIL (M + 1 models per bag; `auto`'s default model where
  the sources pass its relevance pre-check, session 12);
- components of steph: "hypernetwork only" (e, w, λ, top-k) and "merge only" (θ*(x) from a fixed w, λ: the
  (M+1)-row tensordot over every encoder tensor, independent of N).

Timing: per N, `--warmup` calls of every model, then `repeats` rounds in which every model is called once,
round-robin with a rotating start, so that drift and noise hit all models alike; median and p90 per model and
the ratio of medians to abmil's in the same run. Memory (unless --no-memory): on CPU, one child process per
model records the peak RSS (ru_maxrss) above the level after building the model and allocating the largest bag,
running the N in increasing order (a high-water mark, so each N's figure is the peak up to that N); on CUDA,
torch.cuda.max_memory_allocated above the allocated level before the call. The analytic GFLOPs (2 per
multiply-add, matrix products only) are printed next to the timings.

Results: a markdown section on stdout (pasted into BENCHMARKS.md, "Inference cost per bag") and raw rows in
bench/out/inference-cost/results.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from app.domain.merging.base import MergeInputs, StaticModel, SurvivalModel
from app.domain.merging.registry import get_method
from app.domain.mil import FamilyDims, new_abmil
from app.domain.survival import default_bin_edges

UNI2_DIMS = FamilyDims(in_dim=1536, hidden_dim=512, attn_dim=384, n_bins=32)
DEFAULT_NS = (1000, 10000, 50000)
# Repeats per N for the default run (≈ 4–5 min on the 2-core dev VM, dominated by routing at N = 50 000).
DEFAULT_REPEATS = {1000: 15, 10000: 7, 50000: 3}

ABMIL = "abmil"
# (key, label, registry method or None for the plain ABMIL, params)
MODELS: list[tuple[str, str, str | None, dict[str, Any]]] = [
    (ABMIL, "abmil (single cancer-specific model)", None, {}),
    ("steph", "steph (top-k 5)", "steph", {}),
    ("steph_all", "steph (top-k all)", "steph", {"topk": None}),
    ("learned_weights", "learned_weights", "learned_weights", {}),
    ("routing_all", "routing (top-k all: every expert, ROUPKT)", "routing", {"topk": None}),
    ("routing", "routing (top-k 5, service default)", "routing", {}),
    (
        "ensemble",
        "ensemble (steph top-k 5 + every source's own model; auto's default where the sources pass)",
        "ensemble",
        {},
    ),
]
# Parts of steph (top-k 5), timed alongside the models.
COMPONENTS: list[tuple[str, str]] = [
    ("steph_hyper", "· steph: hypernetwork only (e, w, λ, top-k)"),
    ("steph_merge", "· steph: merge only, θ*(x) from w, λ"),
]
LABELS = {key: label for key, label, _, _ in MODELS} | dict(COMPONENTS)


@dataclass
class Row:
    key: str
    label: str
    n: int
    device: str
    repeats: int
    median_ms: float
    p90_ms: float
    min_ms: float
    ratio: float  # median / abmil's median (same N, same run)
    gflops: float | None = None  # analytic
    peak_extra_mb: float | None = None
    times_ms: list[float] = field(default_factory=list)


def random_inputs(dims: FamilyDims, n_sources: int, seed: int = 0, scale: float = 0.02) -> MergeInputs:
    """θ₀ = new_abmil(dims, seed); target and sources = θ₀ + scale · N(0, 1), each with its own stream."""
    base = new_abmil(dims, seed).state_dict()
    gen = torch.Generator().manual_seed(seed + 1)

    def perturbed() -> dict[str, Tensor]:
        return {k: v + scale * torch.randn(v.shape, generator=gen) for k, v in base.items()}

    return MergeInputs(
        base=base,
        target=perturbed(),
        sources=[perturbed() for _ in range(n_sources)],
        source_names=[f"source{i}" for i in range(n_sources)],
        target_name="target",
        dims=dims,
        bin_edges=default_bin_edges(dims.n_bins, 365),
    )


def build_model(key: str, inputs: MergeInputs, seed: int = 0) -> SurvivalModel:
    (_, _, method, params) = next(m for m in MODELS if m[0] == key)
    if method is None:
        model: SurvivalModel = StaticModel(inputs.target, inputs.dims, inputs.bin_edges)
    else:
        registered = get_method(method)
        model = registered.build(inputs, registered.parse_params(params), seed=seed)
    return model.eval()


def callables(models: dict[str, SurvivalModel], bag: Tensor) -> dict[str, Callable[[], Any]]:
    """One zero-argument call per timed row (models, then steph's components when steph is present)."""
    calls: dict[str, Callable[[], Any]] = {key: (lambda m=model: m(bag)) for key, model in models.items()}
    steph = models.get("steph")
    if steph is not None:
        mix = steph.hyper(bag)  # type: ignore[operator]
        calls["steph_hyper"] = lambda: steph.hyper(bag)  # type: ignore[operator]
        calls["steph_merge"] = lambda: steph.merged_encoder(mix)  # type: ignore[operator]
    return calls


def analytic_gflops(key: str, n: int, dims: FamilyDims, n_sources: int) -> float:
    """Matrix-product FLOPs (2 per multiply-add) of one call on a bag of n patches."""
    d, h, a, b, m = dims.in_dim, dims.hidden_dim, dims.attn_dim, dims.n_bins, n_sources
    encoder = 2 * n * (d * h + 2 * h * a + a + h)  # feat_proj, attention a/b/c, pooling
    head = 2 * h * b
    enc_params = d * h + h + 2 * (a * h + a) + a + 1
    merge = 2 * (m + 1) * enc_params  # tensordot over the M+1 task-vector rows (dense: zeros for unselected)
    hyper = 2 * n * d * h + 2 * 2 * (h * h + h * m)  # shared layer on every patch, MLP_w and MLP_r on e
    experts = m + 1  # sources + target (include_target)
    routing_k = {"routing_all": experts, "routing": min(5, experts)}
    flops = {
        ABMIL: encoder + head,
        "steph": hyper + merge + encoder + head,
        "steph_all": hyper + merge + encoder + head,
        "learned_weights": merge + encoder + head,
        "steph_hyper": hyper,
        "steph_merge": merge,
        "ensemble": hyper + merge + encoder + head + m * (encoder + head),
    }
    if key in routing_k:
        k = routing_k[key]
        return (encoder + 2 * h * experts + k * (encoder + 2 * h * h) + head) / 1e9
    return flops[key] / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _p90(xs: list[float]) -> float:
    if len(xs) < 2:
        return xs[0]
    return statistics.quantiles(xs, n=10, method="inclusive")[8]


def measure(
    *,
    ns: tuple[int, ...] = DEFAULT_NS,
    dims: FamilyDims = UNI2_DIMS,
    n_sources: int = 12,
    repeats: int | dict[int, int] = 3,
    warmup: int = 1,
    device: str = "cpu",
    keys: list[str] | None = None,
    seed: int = 0,
    cuda_memory: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[Row]:
    """Time every model (and steph's components) on bags of each N; rows in MODELS/COMPONENTS order per N."""
    dev = torch.device(device)
    keys = keys or [key for key, _, _, _ in MODELS]
    if ABMIL not in keys:
        keys = [ABMIL, *keys]
    inputs = random_inputs(dims, n_sources, seed)
    models = {key: build_model(key, inputs, seed).to(dev) for key in keys}
    gen = torch.Generator().manual_seed(seed + 7)
    rows: list[Row] = []
    with torch.inference_mode():
        for n in ns:
            bag = torch.randn(n, dims.in_dim, generator=gen).to(dev)
            calls = callables(models, bag)
            order = list(calls)
            for _ in range(warmup):
                for key in order:
                    calls[key]()
            _sync(dev)
            reps = repeats[n] if isinstance(repeats, dict) else repeats
            times: dict[str, list[float]] = {key: [] for key in order}
            for r in range(reps):
                for j in range(len(order)):
                    key = order[(r + j) % len(order)]
                    _sync(dev)
                    t0 = time.perf_counter()
                    calls[key]()
                    _sync(dev)
                    times[key].append((time.perf_counter() - t0) * 1000)
            peak: dict[str, float] = {}
            if dev.type == "cuda" and cuda_memory:
                for key in order:
                    _sync(dev)
                    torch.cuda.reset_peak_memory_stats(dev)
                    before = torch.cuda.memory_allocated(dev)
                    calls[key]()
                    _sync(dev)
                    peak[key] = (torch.cuda.max_memory_allocated(dev) - before) / 2**20
            ref = statistics.median(times[ABMIL])
            for key in order:
                med = statistics.median(times[key])
                rows.append(
                    Row(
                        key=key, label=LABELS[key], n=n, device=str(dev), repeats=reps, median_ms=med,
                        p90_ms=_p90(times[key]), min_ms=min(times[key]), ratio=med / ref,
                        gflops=analytic_gflops(key, n, dims, n_sources), peak_extra_mb=peak.get(key),
                        times_ms=[round(t, 3) for t in times[key]],
                    )
                )  # fmt: skip
                if log:
                    row = rows[-1]
                    log(f"{dev.type} N={n:>6} {key:<16} median {med:9.1f} ms  p90 {row.p90_ms:9.1f} ms  "
                        f"×abmil {row.ratio:5.2f}")  # fmt: skip
            del bag, calls
    return rows


def _status_mb(field: str) -> float | None:
    """VmRSS / VmHWM of this process from /proc (None where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    # VmHWM belongs to this process's address space; ru_maxrss would carry the parent's peak across exec.
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(key: str, ns: tuple[int, ...], dims: FamilyDims, n_sources: int, seed: int) -> dict[int, float]:
    """In this (fresh) process: peak RSS during one call above the RSS just before it (model and the largest
    bag already allocated, one warm-up call done). Where the peak cannot be reset, a high-water mark over the N
    in increasing order. Run it with MALLOC_MMAP_THRESHOLD_ set (see measure_memory_cpu) so that freed
    buffers leave the RSS and the next call cannot hide in them."""
    inputs = random_inputs(dims, n_sources, seed)
    model = build_model(key, inputs, seed)
    del inputs
    big = torch.randn(max(ns), dims.in_dim, generator=torch.Generator().manual_seed(seed + 7))
    out: dict[int, float] = {}
    with torch.inference_mode():
        model(big[: min(ns)])  # warm-up: one-time allocations (thread pools, kernels) are not the call's
        base = _peak_mb()
        for n in sorted(ns):
            if _reset_peak():
                base = _status_mb("VmRSS") or base
            model(big[:n])
            out[n] = _peak_mb() - base
    return out


def measure_memory_cpu(
    keys: list[str], ns: tuple[int, ...], dims: FamilyDims, n_sources: int, seed: int, threads: int
) -> dict[str, dict[int, float]]:
    """One child process per model (so each high-water mark is that model's alone)."""
    out: dict[str, dict[int, float]] = {}
    for key in keys:
        cmd = [
            sys.executable, "-m", "bench.inference_cost", "--memory-child", key, "--ns", *map(str, ns),
            "--sources", str(n_sources), "--dim", str(dims.in_dim), "--hidden", str(dims.hidden_dim),
            "--attn", str(dims.attn_dim), "--bins", str(dims.n_bins), "--seed", str(seed), "--threads", str(threads),
        ]  # fmt: skip
        # A fixed mmap threshold: glibc returns every large freed buffer to the OS at once (otherwise the
        # dynamic threshold keeps them resident and later calls reuse them unseen by the RSS).
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
        res = subprocess.run(
            cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1], env=env
        )
        out[key] = {int(k): v for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}
        print(f"memory {key}: " + ", ".join(f"N={n}: {v:.0f} MB" for n, v in out[key].items()), file=sys.stderr)
    return out


def _fmt_ms(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def render(rows: list[Row], meta: dict[str, Any]) -> str:
    """Markdown: per device one table (rows: methods; per N: median ms (p90), × abmil), then memory/GFLOPs."""
    out: list[str] = []
    for device in dict.fromkeys(r.device for r in rows):
        drows = [r for r in rows if r.device == device]
        ns = list(dict.fromkeys(r.n for r in drows))
        keys = list(dict.fromkeys(r.key for r in drows))
        by = {(r.key, r.n): r for r in drows}
        reps = ", ".join(f"{by[(ABMIL, n)].repeats} at N = {n:,}" for n in ns)
        out.append(f"**{device}** — median latency per bag in ms (p90 in parentheses; repeats: {reps}) and the "
                   "ratio of medians to the single ABMIL forward of the same run:\n")  # fmt: skip
        head = "| method | " + " | ".join(f"N = {n:,}: ms (p90) | × abmil" for n in ns) + " |"
        out += [head, "|---|" + "---:|---:|" * len(ns)]
        for key in keys:
            cells = []
            for n in ns:
                r = by[(key, n)]
                cells += [f"{_fmt_ms(r.median_ms)} ({_fmt_ms(r.p90_ms)})", f"{r.ratio:.2f}"]
            out.append(f"| {LABELS[key]} | " + " | ".join(cells) + " |")
        out.append("")
        has_mem = any(r.peak_extra_mb is not None for r in drows)
        mem_what = "peak extra RSS, MB" if device == "cpu" else "peak extra CUDA memory, MB"
        head = "| method | " + " | ".join(
            f"N = {n:,}: GFLOPs" + (f" | {mem_what}" if has_mem else "") for n in ns
        ) + " |"  # fmt: skip
        out += [
            "Analytic GFLOPs per bag (matrix products, 2 per multiply-add)"
            + (f" and {mem_what} during the call:" if has_mem else ":") + "\n",
            head, "|---|" + ("---:|---:|" if has_mem else "---:|") * len(ns),
        ]  # fmt: skip
        for key in keys:
            cells = []
            for n in ns:
                r = by[(key, n)]
                cells.append(f"{r.gflops:.2f}" if r.gflops is not None else "–")
                if has_mem:
                    cells.append(f"{r.peak_extra_mb:,.0f}" if r.peak_extra_mb is not None else "–")
            out.append(f"| {LABELS[key]} | " + " | ".join(cells) + " |")
        out.append("")
    out.append(f"Machine: `{meta['uname']}`; {meta['cpu_count']} CPUs, torch {meta['torch']}, "
               f"torch.get_num_threads() = {meta['threads']}; wall time {meta['wall_s']:.0f} s.")  # fmt: skip
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.inference_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run (≈ 20 s): N = 1000 only, 3 repeats, no memory")
    p.add_argument("--ns", type=int, nargs="+", default=list(DEFAULT_NS))
    p.add_argument("--sources", type=int, default=12, help="M, the number of source task vectors")
    p.add_argument("--repeats", type=int, default=None, help="repeats for every N (default: 15 / 7 / 3 by N)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dim", type=int, default=UNI2_DIMS.in_dim)
    p.add_argument("--hidden", type=int, default=UNI2_DIMS.hidden_dim)
    p.add_argument("--attn", type=int, default=UNI2_DIMS.attn_dim)
    p.add_argument("--bins", type=int, default=UNI2_DIMS.n_bins)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument("--out", type=Path, default=Path("bench/out/inference-cost"))
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dims = FamilyDims(in_dim=args.dim, hidden_dim=args.hidden, attn_dim=args.attn, n_bins=args.bins)
    ns = tuple(args.ns)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, ns, dims, args.sources, args.seed)))
        return 0
    if args.quick:
        ns, args.no_memory = (1000,), True
        args.repeats = args.repeats or 3
    repeats: int | dict[int, int] = args.repeats or {n: DEFAULT_REPEATS.get(n, 3) for n in ns}
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    start = time.perf_counter()
    rows: list[Row] = []
    for device in devices:
        rows += measure(ns=ns, dims=dims, n_sources=args.sources, repeats=repeats, warmup=args.warmup,
                        device=device, seed=args.seed, cuda_memory=not args.no_memory,
                        log=lambda s: print(s, file=sys.stderr, flush=True))  # fmt: skip
    if "cpu" in devices and not args.no_memory:
        keys = [key for key, _, _, _ in MODELS]
        mem = measure_memory_cpu(keys, ns, dims, args.sources, args.seed, torch.get_num_threads())
        for r in rows:
            if r.device == "cpu" and r.key in mem:
                r.peak_extra_mb = mem[r.key].get(r.n)
    meta = {
        "command": "python -m bench.inference_cost " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "uname": " ".join(x for x in platform.uname() if x),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "dims": dims.to_dict(),
        "n_sources": args.sources,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1))
    table = render(rows, meta)
    (args.out / "table.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
