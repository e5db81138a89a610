"""The numbers behind a model report, computed from the model, the target's own model and a cohort's splits.

compute_report_data(...) -> dict (JSON-able, no tensors): held-out labels, both models' risks, S(1/3/5 y), the
time-dependent AUC and Brier curves, the paired bootstrap comparison, the STEPH per-bag sources and one example
patient. app.reports.document turns it into figures and HTML (no torch needed there).
"""

from __future__ import annotations

from typing import Any

import torch

from app.domain.data import Samples, sample_labels
from app.domain.evaluation import ScoredSplit, bootstrap_difference, comparison_of, predict_outputs
from app.domain.metrics import NoComparablePairs, brier_scores, cumulative_dynamic_auc
from app.domain.survival import risk_score, survival_at_times, survival_curve

HORIZONS = (1, 3, 5)
GRID_POINTS = 12


def _score(model: Any, samples: Samples) -> dict[str, Any]:
    outs = predict_outputs(model, samples)
    curves = [survival_curve(o.logits.reshape(-1)).double() for o in outs]
    stacked = torch.stack(curves) if curves else torch.zeros(0, len(model.bin_edges) - 1, dtype=torch.float64)
    at = survival_at_times(stacked, model.bin_edges, [h * 365.0 for h in HORIZONS])
    return {
        "risk": [float(risk_score(o.logits)) for o in outs],
        "curves": stacked.tolist(),
        "surv_at": {h: at[:, k].tolist() for k, h in enumerate(HORIZONS)},
        "sources": [o.info.get("sources") for o in outs],
    }


def time_grid(test_time: list[float], test_event: list[int], train_time: list[float], points: int) -> list[float]:
    """`points` evenly spaced days in [first test event, min(longest test, longest train follow-up)) — where
    AUC(t) and BS(t) are defined — or [] when that range is empty."""
    events = [t for t, e in zip(test_time, test_event, strict=True) if e]
    if not events or not train_time:
        return []
    lo, hi = min(events), min(max(test_time), max(train_time))
    if hi <= lo:
        return []
    step = (hi - lo) / points
    return [lo + k * step for k in range(points)]


def time_metrics(scored: dict[str, dict], labels: tuple, train: tuple, edges: list[float]) -> dict[str, Any]:
    """AUC(t) and BS(t) of each model on the grid; a metric the data leave undefined is None with the reason."""
    (t, e), (rt, re_) = labels, train
    grid = time_grid(t, e, rt, GRID_POINTS)
    out: dict[str, Any] = {"times_days": grid, "auc": {}, "brier": {}, "skipped": {}}
    for name, s in scored.items():
        if not grid:
            out["auc"][name] = out["brier"][name] = None
            out["skipped"][name] = "no time between the first test event and the end of follow-up"
            continue
        try:
            out["auc"][name] = list(cumulative_dynamic_auc(rt, re_, t, e, s["risk"], grid).auc)
        except (NoComparablePairs, ValueError) as exc:
            out["auc"][name], out["skipped"][f"auc:{name}"] = None, str(exc)
        try:
            surv = survival_at_times(torch.tensor(s["curves"], dtype=torch.float64), edges, grid)
            out["brier"][name] = list(brier_scores(rt, re_, t, e, surv, grid).scores)
        except (NoComparablePairs, ValueError) as exc:
            out["brier"][name], out["skipped"][f"brier:{name}"] = None, str(exc)
    return out


def comparison_data(t: list[float], e: list[int], merged: dict, reference: dict, n_boot: int, seed: int) -> dict:
    """Comparison dict (as the job stores it) and the bootstrap differences, or a reason when undefined."""
    tt, ee = torch.tensor(t, dtype=torch.float64), torch.tensor(e, dtype=torch.long)
    risks = [torch.tensor(merged["risk"], dtype=torch.float64), torch.tensor(reference["risk"], dtype=torch.float64)]
    scored = ScoredSplit(tt, ee, risks, [torch.zeros(len(t), 1), torch.zeros(len(t), 1)])
    try:
        comp = comparison_of(scored, n_boot=n_boot, seed=seed).to_dict()
    except (NoComparablePairs, ValueError) as exc:
        return {"comparison": None, "bootstrap": [], "skipped": str(exc)}
    diffs = bootstrap_difference(tt, ee, risks[0], risks[1], n_boot=n_boot, seed=seed).tolist()
    return {"comparison": comp, "bootstrap": diffs, "skipped": None}


def static_weights(method: str, params: dict[str, Any], target: str, sources: list[str]) -> dict[str, Any] | None:
    """The fixed weight of each merged model in a static merge (average, task arithmetic, TIES), else None."""
    include = bool(params.get("include_target", True))
    names = ([f"{target} (target)"] if include else []) + list(sources)
    if method == "average":
        return {"names": names, "weights": [1.0 / len(names)] * len(names), "title": "model averaging: equal weights"}
    if method == "task_arithmetic":
        scale = float(params.get("scale", 0.3))
        coefs = ([float(params.get("target_weight", 1.0))] if include else []) + [
            float(w) for w in (params.get("weights") or [1.0] * len(sources))
        ]
        return {"names": names, "weights": [scale * c for c in coefs], "title": f"task arithmetic (scale {scale:g})"}
    if method == "ties":
        scale = float(params.get("scale", 1.0))
        title = f"TIES (density {params.get('density')}, scale {scale:g}): sign-elected mean"
        return {"names": names, "weights": [scale] * len(names), "title": title}
    return None


def compute_report_data(
    *, model: Any, reference: Any, train_samples: Samples, test_samples: Samples, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Everything the report draws, from one pass of each model over the held-out bags (see module doc)."""
    if len(test_samples) == 0:
        raise ValueError("the cohort's test split is empty: a report needs held-out patients (add a test column)")
    t, e = sample_labels(test_samples)
    rt, re_ = sample_labels(train_samples)
    ids = [getattr(x, "patient_id", str(i)) for i, x in enumerate(getattr(test_samples, "labels", []) or [])]
    merged, ref = _score(model, test_samples), _score(reference, test_samples)
    per_bag = [s for s in merged.pop("sources") if s is not None]
    ref.pop("sources")
    return {
        "test": {"time": t, "event": e, "patient_ids": ids or [f"patient {i + 1}" for i in range(len(t))]},
        "train": {"patients": len(rt), "events": int(sum(re_))},
        "bin_edges": list(model.bin_edges),
        "merged": merged,
        "reference": ref,
        "time_metrics": time_metrics({"merged": merged, "reference": ref}, (t, e), (rt, re_), model.bin_edges),
        **comparison_data(t, e, merged, ref, n_boot, seed),
        "per_bag_sources": per_bag,
        "source_names": list(getattr(model, "source_names", []) or []),
    }
