"""Typed return values of the SDK. Each keeps the full JSON in `raw` so newer server fields are never lost.

Only the stdlib is imported here: the client must stay installable without the server's dependencies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


def from_json(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass `cls` from a JSON object: known fields are copied, missing ones take their default."""
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name == "raw":
            kwargs["raw"] = data
        elif f.name in data:
            kwargs[f.name] = data[f.name]
    return cls(**kwargs)


@dataclass(frozen=True)
class Health:
    """`GET /health/ready`: overall status and per-check results (database, store, queue)."""

    status: str = "unknown"
    checks: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "ready", "pass", "healthy")


@dataclass(frozen=True)
class Base:
    """A model family: shared initial weights θ₀, encoder name, dims, bin edges."""

    id: str
    name: str = ""
    encoder: str = ""
    dims: dict[str, Any] = field(default_factory=dict)
    bin_edges: list[float] = field(default_factory=list)
    sha256: str = ""
    created_at: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Checkpoint:
    """A per-cancer fine-tuned checkpoint registered against a base, with its task-vector norms."""

    id: str
    base_id: str = ""
    cancer: str = ""
    name: str = ""
    description: str | None = None
    sha256: str = ""
    tv_norms: dict[str, float] = field(default_factory=dict)
    created_at: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Cohort:
    """A target cancer's labeled patients (summary: patients, events, slides, patches min/median/max)."""

    id: str
    name: str = ""
    base_id: str = ""
    source: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class MergeJob:
    """A merge job: status, progress (epoch, step, total_steps, loss, eta), comparison when done."""

    id: str
    status: str = "queued"
    method: str = ""
    base_id: str = ""
    target_checkpoint_id: str = ""
    source_checkpoint_ids: list[str] = field(default_factory=list)
    cohort_id: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None
    error: str | None = None
    model_id: str | None = None
    created_at: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class Model:
    """A merged model: method, parameters, sources, metrics, provenance and its artifact sha256."""

    id: str
    method: str = ""
    job_id: str = ""
    base_id: str = ""
    target_checkpoint_id: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    artifact_sha256: str = ""
    created_at: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class SourceUse:
    """For STEPH: a source cancer a bag borrowed from, with merge weight w and mix ratio λ."""

    cancer: str
    weight: float
    lam: float | None = None


@dataclass(frozen=True)
class Prediction:
    """One patient's prediction: risk (higher = worse), the survival step function S at `times_days`."""

    patient_id: str
    risk: float
    times_days: list[float]
    probabilities: list[float]
    sources: list[SourceUse] = field(default_factory=list)
    model_id: str = ""
    model_sha256: str = ""
    model_type: str = ""  # what scored the bag (e.g. "steph", or "ensemble": STEPH + every source's own model)
    ensemble_score: float | None = None  # ensemble models: the combined standardised score (higher = worse)
    promotion_status: str = ""  # the model's promotion gate: promoted | not_promoted | unchecked ("" = older server)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def prediction_from_json(
    item: dict[str, Any], *, model_id: str = "", model_sha256: str = "", model_type: str = "",
    promotion_status: str = "",
) -> Prediction:  # fmt: skip
    """Parse one element of `POST /predict`'s `results` (or `predictions`) list into a `Prediction`."""
    survival = item.get("survival") or {}
    sources = [
        SourceUse(
            cancer=str(s.get("cancer") or s.get("name") or s.get("checkpoint_id") or "?"),
            weight=float(s.get("weight", 0.0)),
            lam=None if s.get("lam") is None else float(s["lam"]),
        )
        for s in item.get("sources") or []
    ]
    return Prediction(
        patient_id=str(item.get("patient_id") or item.get("id") or item.get("filename") or ""),
        risk=float(item["risk"]),
        times_days=[float(t) for t in survival.get("times_days", [])],
        probabilities=[float(p) for p in survival.get("probabilities", [])],
        sources=sources,
        model_id=str(item.get("model_id") or model_id),
        model_sha256=str(item.get("model_sha256") or model_sha256),
        model_type=str(item.get("model_type") or model_type),
        ensemble_score=None if not item.get("ensemble") else float(item["ensemble"]["score"]),
        promotion_status=str(item.get("promotion_status") or promotion_status),
        raw=item,
    )


__all__ = [
    "Base",
    "Checkpoint",
    "Cohort",
    "Health",
    "MergeJob",
    "Model",
    "Prediction",
    "SourceUse",
    "TERMINAL_STATUSES",
    "prediction_from_json",
    "from_json",
]
