"""ensemble: a merged model (STEPH by default) plus the sources' own models, their risks combined per patient.

Not a merge: every source model runs at prediction, so it costs M + 1 forwards (and the artifact holds every
source checkpoint). Where the sources share the target's prognostic structure it gains over STEPH alone
(BENCHMARKS.md, "An ensemble model type"); where they do not, it loses — `auto` only tries it after the sources
pass its relevance pre-check, and a fit whose sources fail that check says so (notes["ensemble"]["warning"]).

    r_0 = risk of the main model (STEPH, or another method, or the target's own checkpoint: `main_method`)
    r_i = risk of source i's own model θ_{s_i} (its own encoder and head), i = 1..M
    z_j = (r_j − mean_j) / sd_j             mean, sd over the target's TRAIN bags (what a deployment knows)
    s   = z_0 + source_weight · mean_i z_i  (the combined score: higher = worse prognosis)
    logits_k = b_k + γ s                    a discrete-time proportional-hazards calibration, γ > 0

(risk = −Σ S_j is the survival.risk_score of a model's logits.) b [n_bins] and γ are fitted by the discrete-time
likelihood (survival.nll_loss with α = 0: the plain likelihood, not the training loss's extra weight on events,
which biases γ) on the train split, so the model has a survival curve; b starts at the train
split's discrete hazards (bins past the last follow-up keep the last observed hazard) and a small ridge keeps
bins without events near it. The ranking of patients depends only on s (γ > 0), so the calibration never changes
the C-index. When the combined score does not rank the train patients at all, γ goes to 0 and every patient gets
the same curve: notes["ensemble"]["degenerate"] says so. The main model's ModelOutput.info (STEPH: the sources it
merged) passes through; info["ensemble"] adds s and every member's z.

Standardising by the train bags' spread uses the main model's in-sample risks, which a trained model separates
more than new patients; the benchmark measures the combination as it is deployed (scored on new patients).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from app.domain.data import Samples
from app.domain.merging.base import MergeInputs, MergeMethod, ModelOutput, StaticModel, SurvivalModel
from app.domain.merging.stacked import validate_inputs
from app.domain.mil import FamilyDims
from app.domain.survival import nll_loss, risk_score, time_to_bin

TARGET_MAIN = "target"  # main_method: the target's own checkpoint, unchanged (no training)
NOT_MAIN = ("auto", "ensemble")
RIDGE = 1e-3  # weight of Σ_k (b_k − b0_k)² in the calibration loss (keeps bins without events near b0)
MIN_SD = 1e-12
DEGENERATE_SLOPE = 1e-3  # γ below this: the combined score carries no ranking on the train split (one curve)


@dataclass
class EnsembleParams:
    main_method: str = field(
        default="steph",
        metadata={
            "help": "the model at the ensemble's centre: a merge method's name (trained as that method would be) "
            "or 'target' (the target's own checkpoint, unchanged)"
        },
    )
    main_params: dict[str, Any] | None = field(
        default=None, metadata={"help": 'parameters of main_method, e.g. {"topk": 3}; null = its defaults'}
    )
    source_weight: float = field(
        default=1.0,
        metadata={"help": "weight of the sources' mean standardised risk against the main model's (0 = main only)"},
    )
    max_sources: int | None = field(
        default=None,
        metadata={
            "help": "keep only this many sources: those whose own models rank the target's train patients best "
            "(Harrell's C on the train split); prediction then runs max_sources + 1 models. null = every source"
        },
    )

    def __post_init__(self) -> None:
        if self.main_method in NOT_MAIN:
            raise ValueError(f"main_method cannot be {self.main_method!r}; use a merge method or 'target'")
        if self.main_method != TARGET_MAIN:
            from app.domain.merging.registry import get_method

            get_method(self.main_method).parse_params(self.main_params or {})  # fail at submission, naming the key
        elif self.main_params:
            raise ValueError("main_params must be empty when main_method is 'target' (the checkpoint is unchanged)")
        if not 0.0 <= self.source_weight <= 100.0:  # NaN fails too
            raise ValueError(f"source_weight must lie in [0, 100]; got {self.source_weight}")
        if self.max_sources is not None and not 1 <= self.max_sources <= 4096:
            raise ValueError(f"max_sources must be in [1, 4096] (or null for every source); got {self.max_sources}")


class EnsembleModel(SurvivalModel):
    """main model + frozen source models; calibrated logits b + γ s (module docstring)."""

    method = "ensemble"
    z_mean: Tensor
    z_sd: Tensor
    weights: Tensor
    calib_bias: Tensor
    calib_slope: Tensor

    def __init__(
        self, main: SurvivalModel, sources: list[dict[str, Tensor]], source_names: list[str], params: EnsembleParams
    ) -> None:
        super().__init__(main.dims, main.bin_edges)
        self.main: SurvivalModel = main
        self.params, self.source_names = params, list(source_names)
        self.members = nn.ModuleList(
            [StaticModel(s, main.dims, main.bin_edges, method="source").requires_grad_(False) for s in sources]
        )
        m = len(sources)
        self.register_buffer("z_mean", torch.zeros(m + 1))
        self.register_buffer("z_sd", torch.ones(m + 1))
        weights = [1.0] + [params.source_weight / m] * m if m else [1.0]
        self.register_buffer("weights", torch.tensor(weights))
        self.register_buffer("calib_bias", torch.zeros(main.dims.n_bins))
        self.register_buffer("calib_slope", torch.ones(()))

    def member_risks(self, bag: Tensor) -> tuple[ModelOutput, Tensor]:
        """The main model's output and the risks [M + 1] of (main, source 1..M) for one bag (float32)."""
        out = self.main(bag)
        risks = [risk_score(out.logits.float().reshape(-1))]
        risks += [risk_score(m(bag).logits.float().reshape(-1)) for m in self.members]
        return out, torch.stack(risks)

    def forward(self, bag: Tensor) -> ModelOutput:
        out, risks = self.member_risks(bag)
        z = (risks - self.z_mean) / self.z_sd
        score = (self.weights * z).sum()
        logits = self.calib_bias + self.calib_slope * score
        names = ["main", *self.source_names]
        info = dict(out.info)
        info["ensemble"] = {
            "score": float(score.detach()),
            "members": [{"name": n, "z": float(v), "weight": float(w)} for n, v, w in zip(
                names, z.tolist(), self.weights.tolist(), strict=True)],
        }  # fmt: skip
        return ModelOutput(logits, logits.new_zeros(()), out.attention, info)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return []  # fitted by EnsembleMethod.fit (the main model's training, then the calibration)

    @property
    def models_per_bag(self) -> int:
        return self.main.models_per_bag + len(self.members)

    def stats_model(self) -> SurvivalModel:
        return self.main.stats_model()

    def artifact_tensors(self) -> dict[str, Tensor]:
        out = {f"main.{k}": v for k, v in self.main.artifact_tensors().items()}
        for i, m in enumerate(self.members):
            out.update({f"member.{i}.{k}": v for k, v in cast(StaticModel, m).artifact_tensors().items()})
        for name in ("z_mean", "z_sd", "weights", "calib_bias", "calib_slope"):
            out[name] = getattr(self, name).detach().cpu().contiguous()
        return out

    def artifact_config(self) -> dict[str, Any]:
        return {
            **super().artifact_config(),
            "params": dataclasses.asdict(self.params),
            "source_names": self.source_names,
            "main_config": self.main.artifact_config(),
        }

    def calibrate(self, samples: Samples, *, should_cancel: Any = None) -> tuple[dict[str, Any], Any]:
        """Set the standardisation (mean, sd of every member's risk) and fit b, γ on `samples` (the target's
        train split) → (what was fitted, JSON-able; the ScoredSplit of (main, sources…) it was fitted from).
        ValueError when the split holds no event."""
        from app.domain.evaluation import score_split

        scored = score_split([self.main, *self.members], samples, should_cancel=should_cancel)
        return self.calibrate_from(scored.times, scored.events, torch.stack(scored.risks)), scored

    def calibrate_from(self, times: Tensor, events: Tensor, risks: Tensor) -> dict[str, Any]:
        """calibrate from risks already scored: [M + 1, n] float64, rows (main, this model's sources in order)."""
        from app.domain.evaluation import model_device

        device = model_device(self)
        if risks.shape[1] < 2 or int(events.sum()) == 0:
            raise ValueError("the ensemble's calibration needs at least two train patients and one event")
        mean, sd = risks.mean(1), risks.std(1)
        weights = self.weights.double().cpu().clone()
        flat = sd <= MIN_SD  # a member that gives every patient the same risk carries no ranking: weight 0
        weights[flat], sd[flat] = 0.0, 1.0
        score = (weights[:, None] * (risks - mean[:, None]) / sd[:, None]).sum(0)
        bins = time_to_bin(times, self.bin_edges)
        bias, slope, loss = fit_calibration(score, bins, events, self.dims.n_bins)
        with torch.no_grad():
            self.z_mean.copy_(mean.to(device))
            self.z_sd.copy_(sd.to(device))
            self.weights.copy_(weights.to(device))
            self.calib_bias.copy_(bias.to(device))
            self.calib_slope.copy_(torch.tensor(slope, device=device))
        return {
            "members": ["main", *self.source_names], "weights": weights.tolist(), "slope": slope, "nll": loss,
            "degenerate": slope < DEGENERATE_SLOPE,
            "flat_members": [n for n, f in zip(["main", *self.source_names], flat.tolist(), strict=True) if f],
            "patients": int(risks.shape[1]),
        }  # fmt: skip


def baseline_hazards(bins: Tensor, events: Tensor, n_bins: int) -> Tensor:
    """Discrete hazards per bin from the labels: events in bin / patients at risk at its start; a bin without an
    event gets ½ / at risk, and bins past the last follow-up keep the last hazard. float64 [n_bins] in (0, 1)."""
    events = events.double()
    at_risk = torch.stack([(bins >= k).double().sum() for k in range(n_bins)])
    deaths = torch.stack([((bins == k) * events).sum() for k in range(n_bins)])
    out = torch.empty(n_bins, dtype=torch.float64)
    last = 0.5
    for k in range(n_bins):
        if at_risk[k] > 0:
            last = max(float(deaths[k]), 0.5) / float(at_risk[k])
        out[k] = min(max(last, 1e-4), 1 - 1e-4)
    return out


def fit_calibration(score: Tensor, bins: Tensor, events: Tensor, n_bins: int) -> tuple[Tensor, float, float]:
    """b [n_bins] and γ > 0 minimising nll_loss(b + γ s) + RIDGE · Σ (b − b0)² (LBFGS, float64, deterministic),
    b0 = logit(baseline_hazards). Returns (b as float32, γ, the final NLL)."""
    b0 = torch.logit(baseline_hazards(bins, events, n_bins))
    bias = b0.clone().requires_grad_(True)
    raw = torch.tensor(math.log(math.e - 1.0), dtype=torch.float64, requires_grad=True)  # softplus(raw) = 1
    s = score.double()
    opt = torch.optim.LBFGS([bias, raw], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        logits = bias[None, :] + nn.functional.softplus(raw) * s[:, None]
        loss = nll_loss(logits, bins, events, alpha=0.0) + RIDGE * ((bias - b0) ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        slope = float(nn.functional.softplus(raw))
        nll = float(nll_loss(bias[None, :] + slope * s[:, None], bins, events, alpha=0.0))
    if not (math.isfinite(slope) and math.isfinite(nll) and bool(torch.isfinite(bias).all())):
        raise ValueError("the ensemble's calibration did not converge (non-finite values)")
    return bias.detach().float(), slope, nll


class EnsembleMethod(MergeMethod):
    name = "ensemble"
    paper = "this service: a merged model plus the sources' own models (not a merge: M + 1 forwards; issue 12)"
    summary = (
        "The main model (STEPH by default) and every source's own model score the bag; their risks, each "
        "standardised on the target's train bags, are added (the sources' mean with source_weight) and calibrated "
        "to a survival curve on the train split. Costs M + 1 forwards at prediction."
    )
    params_type = EnsembleParams
    learned = True

    def _main_method(self, params: EnsembleParams) -> tuple[MergeMethod | None, Any]:
        if params.main_method == TARGET_MAIN:
            return None, None
        from app.domain.merging.registry import get_method

        impl = get_method(params.main_method)
        return impl, impl.parse_params(params.main_params or {})

    def build(self, inputs: MergeInputs, params: EnsembleParams, *, seed: int) -> SurvivalModel:
        """The ensemble around an untrained main model (fit trains it and calibrates)."""
        validate_inputs(inputs, min_sources=1)
        impl, parsed = self._main_method(params)
        main = StaticModel(inputs.target, inputs.dims, inputs.bin_edges) if impl is None else impl.build(
            inputs, parsed, seed=seed)  # fmt: skip
        return EnsembleModel(main, inputs.sources, inputs.source_names, params)

    def fit(
        self, inputs: MergeInputs, params: EnsembleParams, config: Any, samples: Samples, *, progress: Any = None,
        should_cancel: Any = None,
    ) -> tuple[SurvivalModel, Any, dict[str, Any]]:  # fmt: skip
        """Train the main model as its own method would (app.domain.pipeline.fit_parsed: STEPH's β rule, crossfit),
        then calibrate the ensemble on the same samples."""
        validate_inputs(inputs, min_sources=1)
        impl, parsed = self._main_method(params)
        if impl is None:
            main: SurvivalModel = StaticModel(inputs.target, inputs.dims, inputs.bin_edges).eval()
            result, notes = None, dict[str, Any]()
        else:
            from app.domain.pipeline import fit_parsed

            main, result, notes = fit_parsed(
                impl, parsed, inputs, config, samples, progress=progress, should_cancel=should_cancel
            )
        from app.domain.training import resolve_device

        model, notes["ensemble"], scored = assemble(
            main, inputs, params, samples, device=resolve_device(config.device), should_cancel=should_cancel
        )
        warnings: list[str] = []
        if notes["ensemble"]["degenerate"]:
            warnings.append(
                f"the combined score does not rank the target's train patients (γ = {notes['ensemble']['slope']:.2g}): "
                "every patient gets the same survival curve — do not use this model"
            )
        if params.source_weight > 0:
            rel = notes.get("relevance") or _relevance(scored, list(inputs.source_names), config.seed)
            notes.setdefault("relevance", rel)
            if rel.get("passed") is False:
                warnings.append(
                    "the sources' own models do not rank the target's train patients better than chance "
                    f"(z {rel['z']:+.2f} < {rel['threshold_z']:+.2f}); in the benchmark's worlds without shared "
                    "structure the ensemble lost 0.016–0.025 C-index to STEPH alone; method 'auto' (default "
                    "relevance_z) ensembles the sources only when they pass"
                )
        if warnings:
            notes["ensemble"]["warning"] = "; ".join(warnings)
        return model.eval(), result, notes

    def load(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> SurvivalModel:
        from app.domain.merging.registry import load_model
        from app.domain.merging.stacked import load_exact

        params = self.parse_params(config["params"])
        if not isinstance(config["main_config"], dict) or config["main_config"].get("method") in NOT_MAIN:
            raise ValueError("ensemble artifact: its main model must be a merge or a plain model; the file is damaged")
        main = load_model({k[5:]: v for k, v in tensors.items() if k.startswith("main.")}, config["main_config"])
        dims, names = FamilyDims.from_dict(config["dims"]), list(config["source_names"])
        sources = []
        for i in range(len(names)):
            prefix = f"member.{i}."
            sources.append({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        if main.dims != dims or not all(sources):
            raise ValueError("ensemble artifact: tensors do not match its config; the file is damaged")
        try:
            model = EnsembleModel(main, sources, names, params)
        except RuntimeError as exc:
            raise ValueError(f"ensemble artifact: a source model does not load ({exc}); the file is damaged") from None
        own = {k: v for k, v in tensors.items() if "." not in k}
        load_exact(_Buffers(model), own, self.name)
        return model.eval()


def assemble(
    main: SurvivalModel, inputs: MergeInputs, params: EnsembleParams, samples: Samples, *,
    device: Any = "cpu", should_cancel: Any = None,
) -> tuple[EnsembleModel, dict[str, Any], Any]:  # fmt: skip
    """The calibrated ensemble around a trained `main` → (model in eval mode, what was fitted, the ScoredSplit of
    (main, every source) on `samples`). With params.max_sources = k < M, only the k sources whose own models have
    the highest Harrell C on `samples` are kept (ties: the earlier source); each source is scored once."""
    model = EnsembleModel(main, inputs.sources, inputs.source_names, params).to(device)
    info, scored = model.calibrate(samples, should_cancel=should_cancel)
    k = params.max_sources
    if k is None or k >= len(inputs.sources):
        return model.eval(), info, scored
    c = [_c_or_half(scored.times, scored.events, r) for r in scored.risks[1:]]
    keep = sorted(sorted(range(len(c)), key=lambda i: -c[i])[:k])
    model = EnsembleModel(
        main, [inputs.sources[i] for i in keep], [inputs.source_names[i] for i in keep], params
    ).to(device)  # fmt: skip
    info = model.calibrate_from(
        scored.times, scored.events, torch.stack([scored.risks[0], *(scored.risks[1 + i] for i in keep)])
    )
    info["selection"] = {"kept": [inputs.source_names[i] for i in keep],
                         "train_c": dict(zip(inputs.source_names, c, strict=True))}  # fmt: skip
    return model.eval(), info, scored


def _c_or_half(times: Tensor, events: Tensor, risk: Tensor) -> float:
    """Harrell's C, or ½ when the split has no comparable pair."""
    from app.domain.metrics import NoComparablePairs, harrell_c_index

    try:
        return float(harrell_c_index(times, events, risk).c_index)
    except NoComparablePairs:
        return 0.5


def _relevance(scored: Any, names: list[str], seed: int) -> dict[str, Any]:
    """The relevance pre-check (app.domain.relevance, threshold DEFAULT_Z) from the sources' risks the calibration
    already scored on the train bags (scored.risks[1:]; every patch: no second pass over the bags)."""
    from app.domain.relevance import DEFAULT_Z, judged, relevance_of_risks

    return judged(
        lambda: relevance_of_risks(scored.times, scored.events, scored.risks[1:], names, seed=seed), DEFAULT_Z
    )


class _Buffers(nn.Module):
    """A view of an EnsembleModel's own buffers (z_mean … calib_slope) for a strict load."""

    def __init__(self, model: EnsembleModel) -> None:
        super().__init__()
        for name in ("z_mean", "z_sd", "weights", "calib_bias", "calib_slope"):
            self.register_buffer(name, getattr(model, name))
