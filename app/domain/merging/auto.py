"""auto: choose the merge for this target from evidence on its train split, and return the winner with it.

Candidates (CANDIDATES; `candidates` selects a subset, default DEFAULT_CANDIDATES = steph_ensemble, retrain; the
target's own model is always included as the reference):

    steph          STEPH, default preset                     steph_lam0   STEPH with λ = 0 (sources only)
    average        mean of target + source encoders, new head
    steph_ensemble STEPH plus the sources' own models, risks combined (the `ensemble` method: M + 1 forwards)
    target_head    the target's encoder + a retrained head   base_head    θ₀'s encoder + a retrained head
    retrain        no transfer: a cancer-specific model retrained from θ₀ with the job's training settings
    target         the target's own model, unchanged (the reference)

1. Relevance pre-check (app.domain.relevance; `relevance_z`, default RELEVANCE_Z = 1.645, one-sided 5 %, fixed
   before the benchmark): every source's own model scores the target's train patients (none has seen them, so
   every train patient counts and nothing is refitted); unless the ensemble ranks them better than chance by
   `relevance_z` standard errors, the candidates that borrow from the sources (steph, steph_lam0, average,
   steph_ensemble) are dropped — the sources know nothing about this target's prognosis.
2. The choice (`choose`):
   - "relevance" (default): the first candidate left that borrows from the sources wins (by default STEPH plus
     the sources' ensemble); when none is left, the `fallback`: STEPH with β = 0 (default; what the default STEPH
     itself trains when its sources fail the same check), `retrain`, or the target's own model unchanged. No
     inner CV is spent on the choice; the promotion gate validates a merge winner like any merge (its estimate
     is the evidence). Either way the STEPH trains with auto's verdict on β (its own beta_rule would only measure
     the same relevance again).
   - "cv": every candidate left is scored by the promotion gate's K-fold CV (app.domain.promotion.cross_validate:
     the target model is refitted in each fold, C counts within-fold pairs); the winner has the highest CV
     C-index among those that beat the refitted target by more than `margin`; when none does, no transfer:
     `retrain` when it is a candidate (its CV estimate IS the fold refits), else the target's own model. The
     winner's CV gain is the best of several noisy estimates, so it is optimistic (a winner's curse); promotion
     uses it anyway and says so in the reason.
   The winner is then trained on the whole train split; the saved model is the winner's own model type (its
   artifact says which method won); run.notes["auto"] holds the rule, the relevance evidence and the candidates'
   estimates.

Why this default (BENCHMARKS.md, "Where merging pays"): an inner CV on 40–80 train patients cannot rank candidates
whose true differences are ±0.03 (the first rule, inner CV over STEPH, STEPH λ = 0 and retrain, was up to 0.013
below a budget-matched cancer-specific model on average in control worlds). The sources' relevance is measured on
every train patient with models that never saw them and separates shared from control worlds far better. Scored
on 4 000 new patients per seed (session 11), the default STEPH beat the budget-matched model in every world, control
worlds included, and STEPH plus the sources' ensemble beat STEPH wherever the sources are relevant; so the third
rule (session 12, checked on 56 seeds never run before, with the checks written down first): sources relevant →
STEPH + ensemble, else STEPH with β = 0. It gained +0.041 over the budget-matched model in regime (b)'s shared
world (the rule before: +0.025) and +0.005 to +0.029 in the other five worlds (before: −0.001 to +0.006). Its
price: where the sources pass, the model runs M + 1 forwards per bag. `"candidates": ["steph", "retrain"]` keeps
one forward; `"fallback": "retrain"` or `"target"` gives the no-transfer fallbacks.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from app.domain.data import Samples
from app.domain.merging.base import MergeInputs, MergeMethod, SurvivalModel
from app.domain.promotion import (
    BASE_HEAD,
    RETRAIN,
    TARGET,
    TARGET_HEAD,
    Candidate,
    GateConfig,
    c_index,
    cross_validate,
    decide,
    paired_estimate,
)
from app.domain.relevance import DEFAULT_Z
from app.domain.training import TrainConfig, TrainResult

CANDIDATES: dict[str, Candidate] = {
    "steph": Candidate("steph", "steph", {}),
    "steph_lam0": Candidate("steph λ = 0", "steph", {"lam_mode": "fixed", "lam_value": 0.0}),
    "average": Candidate("average + retrained head", "average", {}),
    "steph_ensemble": Candidate("steph + sources' ensemble", "ensemble", {}),
    "target_head": TARGET_HEAD,
    "base_head": BASE_HEAD,
    "retrain": RETRAIN,
    "target": TARGET,
}
DEFAULT_CANDIDATES = ("steph_ensemble", "retrain")  # session 12 hold-out (BENCHMARKS.md, "auto, third revision")
DEFAULT_FOLDS = 3
RELEVANCE_Z = DEFAULT_Z  # the relevance pre-check's threshold (app.domain.relevance)
CHOICE_RULES = ("relevance", "cv")
FALLBACKS = ("steph", "retrain", "target")


@dataclass
class AutoParams:
    candidates: list[str] | None = field(
        default=None,
        metadata={
            "help": f"candidate names among {list(CANDIDATES)}; null = {list(DEFAULT_CANDIDATES)} (the target's own "
            "model is always in, as the reference)"
        },
    )
    folds: int | None = field(default=None, metadata={"help": "inner CV folds; null = the gate's (3 when off)"})
    margin: float = field(
        default=0.0, metadata={"help": "a candidate must beat the target's own model by more than this (C-index)"}
    )
    steph_params: dict[str, Any] | None = field(
        default=None, metadata={"help": 'extra STEPH parameters for the STEPH candidates, e.g. {"hyper_hidden": 64}'}
    )
    ensemble_params: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": 'extra parameters of the steph_ensemble candidate, e.g. {"max_sources": 3} (prediction runs at '
            "most 4 models per bag instead of M + 1)"
        },
    )
    choose: str = field(
        default="relevance",
        metadata={
            "help": "how the winner is chosen: 'relevance' (the default) = the first candidate that borrows from "
            "the sources when they pass the relevance pre-check, else no transfer (no inner CV for the choice; "
            "the promotion gate still validates the winner); 'cv' = the best inner-CV C-index among the candidates "
            "left after the pre-check"
        },
    )
    fallback: str | None = field(
        default=None,
        metadata={
            "help": "choose 'relevance': what auto returns when the sources fail the pre-check — 'steph' (STEPH "
            "with β = 0: the target's task vector dominates, the sources mix in only where they help the loss; "
            "the default, null), 'retrain' (a cancer-specific model retrained with the job's settings) or 'target' "
            "(the target's own model unchanged)"
        },
    )
    relevance_z: float | None = field(
        default=RELEVANCE_Z,
        metadata={
            "help": "pre-check before any candidate that borrows from the sources: the sources' own models must rank "
            "the target's train patients better than chance by this many standard errors (z of the ensemble "
            "C-index); below it those candidates are not tried. null = no pre-check"
        },
    )

    def __post_init__(self) -> None:
        unknown = [c for c in self.candidates or [] if c not in CANDIDATES]
        if unknown:
            raise ValueError(f"unknown auto candidate {unknown[0]!r}; known: {', '.join(CANDIDATES)}")
        if self.folds is not None and self.folds < 2:
            raise ValueError(f"folds must be ≥ 2 (or null); got {self.folds}")
        if not -1.0 < self.margin < 1.0:
            raise ValueError(f"margin must lie in (−1, 1) (C-index units); got {self.margin}")
        if self.relevance_z is not None and not -10.0 <= self.relevance_z <= 10.0:
            raise ValueError(f"relevance_z must lie in [−10, 10] (standard errors) or be null; got {self.relevance_z}")
        if self.choose not in CHOICE_RULES:
            raise ValueError(f"choose must be one of {', '.join(CHOICE_RULES)}; got {self.choose!r}")
        if self.fallback is not None and self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)} (or null); got {self.fallback!r}")
        if self.fallback is not None and self.choose != "relevance":
            raise ValueError("fallback applies to choose 'relevance' only (under 'cv' the inner CV decides)")
        if self.choose == "relevance" and self.relevance_z is None:
            raise ValueError("choose 'relevance' needs a relevance_z threshold; use choose 'cv' to skip the pre-check")
        if self.steph_params is not None:
            from app.domain.merging.steph import StephMethod

            StephMethod().parse_params(self.steph_params)  # fail at submission, naming the bad key
        if self.ensemble_params is not None:
            if {"main_method", "main_params"} & set(self.ensemble_params):
                raise ValueError("ensemble_params cannot set main_method or main_params (use steph_params)")
            from app.domain.merging.ensemble import EnsembleMethod

            EnsembleMethod().parse_params(self.ensemble_params)

    def fallback_name(self) -> str:
        """What the relevance rule returns when the sources fail the pre-check (default 'steph')."""
        return self.fallback or "steph"

    def fallback_steph(self) -> Candidate:
        """The 'steph' fallback: STEPH with β = 0 (auto's verdict stands: no relevance pass of its own)."""
        params = {**(self.steph_params or {}), "beta": 0.0, "beta_rule": "fixed"}
        return Candidate("steph β = 0 (fallback)", "steph", params)

    def chosen(self) -> list[Candidate]:
        names = list(self.candidates or DEFAULT_CANDIDATES)
        out = [CANDIDATES[n] for n in dict.fromkeys([*names, "target"])]
        out = [_with_steph_params(c, self.steph_params or {}) for c in out]
        extra = self.ensemble_params or {}
        return [dataclasses.replace(c, params={**c.params, **extra}) if c.method == "ensemble" else c for c in out]


def _with_steph_params(cand: Candidate, extra: dict[str, Any]) -> Candidate:
    """The candidate with `extra` STEPH parameters: its own params for STEPH, the main model's for an ensemble
    around STEPH; other candidates unchanged."""
    if cand.method == "steph":
        return dataclasses.replace(cand, params={**cand.params, **extra})
    if cand.method == "ensemble" and cand.params.get("main_method", "steph") == "steph":
        main = {**(cand.params.get("main_params") or {}), **extra}
        return dataclasses.replace(cand, params={**cand.params, "main_params": main})
    return cand


@dataclass
class AutoResult:
    model: SurvivalModel
    train_result: TrainResult | None
    evidence: dict[str, Any]  # JSON-able: per candidate CV C and Δ vs the target, the winner, folds, seconds
    promotion: dict[str, Any]


NO_TRANSFER = (TARGET.label, RETRAIN.label)


def choose(scores: dict[str, dict[str, Any]], order: list[str], margin: float) -> str:
    """Label of the winner: highest CV C among the transfer candidates whose Δ vs the refitted target > margin
    (earlier wins ties); when none qualifies, the retrained cancer-specific model if it is in `order`, else the
    target's own model."""
    best, best_c = (RETRAIN.label if RETRAIN.label in order else TARGET.label), float("-inf")
    for label in order:
        s = scores[label]
        if label not in NO_TRANSFER and s["difference"] is not None and s["difference"] > margin and s["c"] > best_c:
            best, best_c = label, s["c"]
    return best


def run_auto(
    inputs: MergeInputs, params: AutoParams, config: TrainConfig, samples: Samples, *, gate: GateConfig,
    should_cancel: Any = None,
) -> AutoResult:  # fmt: skip
    """Cross-validate the candidates, pick the winner (choose), train it on all of `samples`."""

    cands = params.chosen()
    folds = params.folds or (gate.n_folds if gate.mode != "off" else DEFAULT_FOLDS)
    t0 = time.perf_counter()
    relevance = _relevance_check(inputs, samples, cands, params.relevance_z, config, should_cancel)
    if not inputs.sources or (relevance is not None and not relevance["passed"]):
        cands = [c for c in cands if not _borrows(c)]
    by_relevance = params.choose == "relevance" and any(_borrows(c) for c in cands)
    if by_relevance or all(c.label in NO_TRANSFER for c in cands):  # else the inner CV chooses among the rest
        return _by_relevance(inputs, config, samples, cands, relevance, folds, gate, should_cancel, params)
    try:
        cv = cross_validate(cands, inputs, samples, config, folds=folds, should_cancel=should_cancel)
    except ValueError as exc:
        evidence = {"winner": TARGET.label, "error": str(exc), "folds": folds}
        return AutoResult(_target_model(inputs), None, evidence, _kept_target(f"auto could not validate: {exc}"))
    scores: dict[str, dict[str, Any]] = {TARGET.label: {"c": c_index(cv, TARGET.label), "difference": 0.0}}
    for cand in cands:
        if cand is not TARGET:
            scores[cand.label] = paired_estimate(cv, cand.label, TARGET.label, seed=config.seed)
    winner = choose(scores, [c.label for c in cands], params.margin)
    evidence = {
        "rule": "cv", "winner": winner, "folds": folds, "margin": params.margin,
        "cv_seconds": round(time.perf_counter() - t0, 2),
        "candidates": {k: _brief(v) for k, v in scores.items()},
        **({"relevance": relevance} if relevance is not None else {}),
    }  # fmt: skip
    if winner == TARGET.label:
        why = "auto kept the target's own model: no candidate beat it in inner CV by more than the margin"
        return AutoResult(_target_model(inputs), None, evidence, _kept_target(why))
    cand = next(c for c in cands if c.label == winner)
    model, result = _fit_winner(cand, inputs, config, samples, should_cancel, evidence)
    promotion: dict[str, Any]
    if cand.refit:
        promotion = {
            "status": "not_promoted", "estimate": scores[winner],
            "reason": "auto chose no transfer: no merge candidate beat a cancer-specific model retrained with this "
            "job's settings in inner CV by more than the margin, so that retrained model is returned; it is not "
            "promoted over the target's own checkpoint, which the inner CV cannot score without bias",
        }  # fmt: skip
    else:
        promotion = {**decide(scores[winner], gate.margin), "estimate": scores[winner]}
        promotion["reason"] += f" (best of {len(cands)} candidates: optimistic)"
    return AutoResult(model, result, evidence, promotion)


def _borrows(cand: Candidate) -> bool:
    """True for a candidate built from the source models (STEPH, STEPH λ = 0, average, STEPH + ensemble)."""
    return cand.method is not None and cand.use_sources


def _relevance_check(
    inputs: MergeInputs, samples: Samples, cands: list[Candidate], z_min: float | None, config: TrainConfig,
    should_cancel: Any,
) -> dict[str, Any] | None:  # fmt: skip
    """The relevance pre-check's evidence (app.domain.relevance.check_sources); None when it does not apply (no
    threshold, no source, or no candidate that borrows)."""
    if z_min is None or not inputs.sources or not any(_borrows(c) for c in cands):
        return None
    from app.domain.relevance import check_sources

    rel = check_sources(inputs, samples, config, z_min, should_cancel)
    if "c" not in rel:  # not measurable (no comparable pair): the candidates are tried
        rel["reason"] += "; the candidates were tried"
    elif not rel["passed"]:
        rel["reason"] += ": no prognostic signal shared with the target, so no candidate borrows from them"
    return rel


def _by_relevance(
    inputs: MergeInputs, config: TrainConfig, samples: Samples, cands: list[Candidate],
    relevance: dict[str, Any] | None, folds: int, gate: GateConfig, should_cancel: Any, params: AutoParams,
) -> AutoResult:  # fmt: skip
    """The winner without an inner CV for the choice: the first candidate left that borrows from the sources (they
    passed the pre-check), validated by the promotion gate like any merge; when the sources failed, the fallback —
    STEPH with β = 0 (validated the same way), retrain, or the target's own model (params.fallback_name)."""
    evidence: dict[str, Any] = {"rule": "relevance", "folds": folds, "candidates": {}}
    if relevance is not None:
        evidence["relevance"] = relevance
        why = relevance["reason"]
    else:
        why = "no candidate borrows from the sources" if inputs.sources else "there are no source models to borrow from"
    borrowing = [c for c in cands if _borrows(c)]
    # the fallback decides when the pre-check removed the candidates that borrow (rule 'relevance'); otherwise no
    # transfer: retrain when it is a candidate, else the target's own model
    failed = relevance is not None and relevance.get("passed") is False and params.choose == "relevance"
    fallback = params.fallback_name() if failed else ("retrain" if any(c.refit for c in cands) else "target")
    if borrowing or (fallback == "steph" and inputs.sources):
        from app.domain.pipeline import gate_model

        if borrowing:  # STEPH's own β rule would measure the same relevance again: auto's verdict (passed) holds
            cand, because = _with_steph_params(borrowing[0], {"beta_rule": "fixed"}), f"because {why}"
        else:
            cand, because = params.fallback_steph(), f"as its fallback: {why}"
        model, result = _fit_winner(cand, inputs, config, samples, should_cancel, evidence)
        promotion = gate_model(str(cand.method), cand.params, inputs, config, samples, gate, should_cancel)
        promotion["reason"] = f"auto chose {cand.label} {because}; the promotion gate: {promotion['reason']}"
        if promotion.get("estimate"):
            evidence["candidates"] = {cand.label: _brief(promotion["estimate"])}
        evidence["winner"] = cand.label
        evidence["models_per_bag"] = model.models_per_bag  # the prediction cost (an ensemble: 1 + the sources kept)
        return AutoResult(model, result, evidence, promotion)
    if fallback == "retrain":
        model, result = _fit_winner(RETRAIN, inputs, config, samples, should_cancel)
        evidence["winner"] = RETRAIN.label
        reason = f"auto chose no transfer: {why}; a cancer-specific model retrained with this job's settings is "
        reason += "returned, not promoted over the target's own checkpoint"
        return AutoResult(model, result, evidence, {"status": "not_promoted", "reason": reason})
    evidence["winner"] = TARGET.label
    return AutoResult(_target_model(inputs), None, evidence, _kept_target(f"auto kept the target's own model: {why}"))


def _fit_winner(
    cand: Candidate, inputs: MergeInputs, config: TrainConfig, samples: Samples, should_cancel: Any,
    evidence: dict[str, Any] | None = None,
) -> tuple[SurvivalModel, TrainResult | None]:  # fmt: skip
    """The chosen candidate trained on the whole train split, with its TrainResult; a warning of its fit (an
    ensemble's, app.domain.merging.ensemble) goes to evidence["warning"]."""
    if cand.refit:
        from app.domain.training import fit_cancer_specific

        return fit_cancer_specific(
            inputs.base, samples, config, dims=inputs.dims, bin_edges=inputs.bin_edges, should_cancel=should_cancel
        )
    from app.domain.merging.registry import get_method
    from app.domain.pipeline import fit_parsed
    from app.domain.promotion import candidate_inputs

    impl = get_method(str(cand.method))
    model, result, notes = fit_parsed(
        impl, impl.parse_params(cand.params), candidate_inputs(cand, inputs), config, samples,
        should_cancel=should_cancel,
    )  # fmt: skip
    warning = (notes.get("ensemble") or {}).get("warning")
    if warning and evidence is not None:
        evidence["warning"] = warning
    return model, result


def _brief(score: dict[str, Any]) -> dict[str, Any]:
    return {k: score.get(k) for k in ("c", "difference", "se", "ci_low", "ci_high")}


def _kept_target(reason: str) -> dict[str, Any]:
    """The promotion of a result that IS the target's checkpoint, unchanged: there is nothing to promote it over
    (it is what the gate compares with), so it is `unchecked`, not `not_promoted` — it can be aliased as the
    target's model without allow_not_promoted (README: "keep serving the target's own checkpoint")."""
    why = f"{reason}; the result is the target's own checkpoint, unchanged (nothing to promote)"
    return {"status": "unchecked", "target_unchanged": True, "reason": why}


def _target_model(inputs: MergeInputs) -> SurvivalModel:
    from app.domain.merging.base import StaticModel

    return StaticModel(inputs.target, inputs.dims, inputs.bin_edges).eval()


class AutoMethod(MergeMethod):
    name = "auto"
    paper = "this service: a source-relevance pre-check, then STEPH + the sources' ensemble or STEPH with β = 0"
    summary = (
        "Checks that the sources' own models rank the target's train patients better than chance; if they do, "
        "STEPH plus the sources' own models (the ensemble method, M + 1 forwards per bag), else STEPH with β = 0 "
        '(fallback), validated by the promotion gate. \'candidates\' ["steph", "retrain"] keeps one forward; '
        "'fallback' retrain or target gives no transfer. With choose 'cv' it picks by K-fold CV on the train split "
        "(target refitted in each fold) among the candidates left."
    )
    params_type = AutoParams
    learned = True

    def build(self, inputs: MergeInputs, params: AutoParams, *, seed: int) -> SurvivalModel:
        raise ValueError("method 'auto' needs the train split to choose; run it through pipeline.run_merge")

    def load(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> SurvivalModel:
        raise ValueError("an 'auto' model is saved as the method that won; load it with that method's name")
