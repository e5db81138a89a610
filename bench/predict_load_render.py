"""bench.predict_load: the markdown tables (BENCHMARKS.md, "Predict under load")."""

from __future__ import annotations

from typing import Any


def _compute(rows: list[dict[str, Any]], low: str) -> list[str]:
    ns = sorted({r["n"] for r in rows})
    lines = [
        "| model | dtype | " + " | ".join(f"N = {n:,}: ms (× ABMIL fp32, × ABMIL same dtype)" for n in ns) + " |",
        "|---|---|" + "---:|" * len(ns),
    ]
    for model in ("abmil", "steph", "routing"):
        for dtype in ("float32", low):
            cells = []
            for n in ns:
                r = next(x for x in rows if x["n"] == n and x["model"] == model and x["dtype"] == dtype)
                cells.append(f"{r['ms']:,.0f} ({r['x_abmil_fp32']:.2f}, {r['x_abmil_same_dtype']:.2f})")
            lines.append(f"| {model} | {dtype} | " + " | ".join(cells) + " |")
    return lines


def _quality(q: dict[str, Any], low: str) -> list[str]:
    lines = [
        f"Bench world: 4 synthetic cancers at D = {q['dim']}, the target scored on {q['n_test']} held-out patients "
        f"({q['events_test']} events); models trained in float32 ({q['epochs']} epochs).",
        "",
        f"| model | C-index float32 | C-index {low} | Δ C-index | max abs Δrisk (risk range) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in q["rows"]:
        lines.append(
            f"| {r['model']} | {r['c_fp32']:.4f} | {r['c_low']:.4f} | {r['delta_c']:+.4f} | "
            f"{r['max_abs_drisk']:.2e} ({r['risk_range']:.2f}) |"
        )
    steph = next(r for r in q["rows"] if r["model"] == "steph")
    lines += ["", f"STEPH trained with `compute_dtype={low}` (same seed, scored in float32): C-index "
              f"{q['steph_trained_low_c']:.4f} vs {steph['c_fp32']:.4f} trained in float32 "
              f"(Δ {q['steph_trained_low_c'] - steph['c_fp32']:+.4f})."]  # fmt: skip
    return lines


def _train(t: dict[str, Any], low: str) -> list[str]:
    ms = t["ms"]
    ref = ms["cancer_specific|float32"]
    lines = [
        f"| one training bag, N = {t['n']:,} (forward + loss + backward) | ms | × cancer-specific float32 |",
        "|---|---:|---:|",
    ]
    for key in ("cancer_specific|float32", f"cancer_specific|{low}", "steph|float32", f"steph|{low}"):
        model, dtype = key.split("|")
        lines.append(f"| {model} ({dtype}) | {ms[key]:,.0f} | {ms[key] / ref:.2f} |")
    return lines


def _service(s: dict[str, Any]) -> list[str]:
    lines = [
        f"One {s['n_patches']:,} × 1536 float16 .h5 ({s['bag_mb']:.1f} MiB), server dtype {s['dtype']}; in-process "
        f"forward {s['forward_s'] * 1e3:,.0f} ms, read + forward {s['read_forward_s'] * 1e3:,.0f} ms:",
        "",
        "| request (client → server on this machine) | median ms | × in-process forward "
        "| × in-process read + forward |",
        "|---|---:|---:|---:|",
        *[
            f"| {label} | {s[key] * 1e3:,.0f} | {s[key] / s['forward_s']:.2f} | {s[key] / s['read_forward_s']:.2f} |"
            for label, key in (
                ("POST /predict (multipart upload)", "http_s"),
                ("POST /predict/bag (raw body upload; the SDK's path for one bag)", "http_raw_s"),
                ("POST /predict/paths (read in place under STEPH_DATA_ROOT)", "http_path_s"),
                ("HTTP floor: the same bytes to a bare Starlette app that only receives them", "http_floor_s"),
            )
            if key in s
        ],
        "",
        f"Cold start (`steph serve` spawn → first 200 from "
        f"POST /predict, model loaded on that request): **{s['cold_start']['first_predict_s']:.1f} s** "
        f"(GET /health/ready answered 200 after {s['cold_start']['ready_s']:.1f} s). Memory: reading a "
        f"{s['rss']['n']:,} × 1536 float16 .h5 and scoring it with STEPH raises the peak RSS by "
        f"**{s['rss']['auto']:.2f}×** the bag's float32 size ({s['rss']['fp32_bag_mb']:,.0f} MiB) with the auto "
        f"dtype, {s['rss']['float32']:.2f}× in float32.",
        "",
        "| request | concurrent clients | requests | throughput (req/s) | p50 latency (s) | p95 latency (s) | "
        "server peak RSS over its model-loaded base (MiB) | × 1 client | CPU s per request: server + clients | "
        "throughput ÷ CPU ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    kinds = (
        ("clients", "POST /predict/bag (raw body, the SDK's path)"),
        ("clients_multipart", "POST /predict (multipart)"),
    )
    for key, what in kinds:
        if key in s:
            lines += _client_rows(s[key], what)
    return lines


def _cpu(block: dict[str, Any]) -> str:
    """'server + clients | share of the ceiling' (blank in rows from before the CPU was measured)."""
    if "cpu_ceiling" not in block:
        return " | "
    server, client = block["server_cpu_s_per_request"], block["client_cpu_s_per_request"]
    share = block["throughput"] / block["cpu_ceiling"]
    ceiling = f"ceiling {block['cpu_ceiling']:.2f} req/s on {block['cores']} cores"
    return f"{server:.3f} + {client:.3f} | {share:.2f} ({ceiling})"


def _client_rows(blocks: list[dict[str, Any]], what: str) -> list[str]:
    lines = []
    one = blocks[0]
    for c in blocks:
        lines.append(
            f"| {what} | {c['clients']} | {c['requests']} | {c['throughput']:.2f} | {c['p50_s']:.2f} | "
            f"{c['p95_s']:.2f} | "
            f"{c['peak_rss_over_idle_mb']:,.0f} | throughput {c['throughput'] / one['throughput']:.2f}, "
            f"memory {c['peak_rss_over_idle_mb'] / max(one['peak_rss_over_idle_mb'], 1e-9):.2f} | {_cpu(c)} |"
        )
    return lines


def markdown(result: dict[str, Any]) -> str:
    low = result["low_dtype"]
    parts = [
        f"Command: `{result['command'].strip()}`  \nMachine: {result['machine']}; wall time "
        f"{result['wall_s'] / 60:.1f} min. Reduced dtype here: **{low}** (what `STEPH_INFERENCE_DTYPE=auto` picks).",
    ]
    if "compute" in result:
        parts += ["", "**Compute** (random weights, 12 sources, top-k 5; median of round-robin calls):", ""]
        parts += _compute(result["compute"], low)
    if "quality" in result:
        parts += ["", "**Precision**:", "", *_quality(result["quality"], low)]
    if "train" in result:
        parts += ["", "**Training cost** (a merge epoch is these bags plus one AdamW step per 16 bags):", ""]
        parts += _train(result["train"], low)
    if "service" in result:
        parts += ["", "**Service** (`steph serve`, default settings, client and server on this machine):", ""]
        parts += _service(result["service"])
    return "\n".join(parts) + "\n"
