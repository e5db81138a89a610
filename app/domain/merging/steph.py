"""STEPH: sparse task-vector mixup with hypernetworks (SPEC §1).

    e = mean_n ReLU(Linear_{D→h}(x_n))                      shared per-patch layer, then mean over patches
    w = act(MLP_w(e)) ∈ R^M,   r = ReLU(MLP_r(e)),   λ = 1 / (1 + r)    act = softplus (default) | ReLU ('paper')
    S = top-k(w)   (no renormalisation)
    θ*(x) = θ₀ + (Σ_{i∈S} w_i λ_i) τ_t + Σ_{i∈S} w_i (1 − λ_i) τ_{s_i}      (encoder only, per bag)
    aux = γ [(logsumexp_i w_i)² + (1/k) Σ_{i∈S} w_i] + β mean_{i∈S} λ_i²

Presets: 'paper' is the paper's exact formulation (ReLU weights). 'default' replaces ReLU by softplus for w:
with ReLU every w_i can be 0 on every bag (measured: 24–95 % of the entries are positive at initialisation,
and 4 of 9 runs collapsed to θ₀ for good, with no gradient to recover), softplus(·) > 0 cannot die.
merge_statistics() reports per-bag Σw, λ and top-k membership, and whether the merge collapsed. The head
(the prediction Linear, not merged) is trained with the hypernetworks; the paper starts it fresh, the default
starts it as a copy of the target checkpoint's head (head_init "target"): the merged encoder begins near the
target's own (λ ≈ 1 at initialisation), where that head already reads the slide feature. Measured on the regime
worlds (BENCHMARKS.md, "STEPH's head from the target checkpoint"): as good or better in every setting, and a
smaller spread between seeds.

Ablations: lam_mode "fixed" (λ = lam_value for every source and bag; 0 = sources only, 1 = target only) and
"global" (one trainable λ per source shared by all bags, λ = sigmoid(logit), initialised at lam_value);
topk=None disables sparsity. With a fixed λ the β term is a constant and is left out.

Where λ starts (lam_init, lam_mode "hyper"): with the default initialisation MLP_r's output is near 0, so
many r_i sit in the ReLU's flat region (r_i = 0, λ_i = 1, no gradient) and the rest give λ_i just under 1
(mean λ over the selected sources ≈ 0.94–0.99 at initialisation on the bench worlds). lam_init = x sets the
bias of MLP_r's last layer to 1/x − 1 and scales that layer's weights by LAM_INIT_WEIGHT_SCALE, so that at
initialisation r ≈ 1/x − 1 and λ ≈ x for typical bags. λ = 1/(1 + r) with r = ReLU(·) ≥ 0 can never exceed
1, hence 0 < lam_init ≤ 1; a small lam_init puts r well inside the ReLU's active region (every λ_i gets a
gradient from the first step), lam_init = 1 puts the bias at the kink. Note that λ moves slowly once r is
large (dλ/dr = −λ²). lam_init None (default) leaves the initialisation exactly as before.

Cross-fitting (crossfit "split" / "split_plugin", orchestrated by app.domain.crossfit from run_merge): τ_t is
refitted on one half of the train split and the hypernetworks + head learn on the other half, so the mixup
ratio λ is not learnt on bags that τ_t has memorised; "split_plugin" then puts the full τ_t back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from app.domain.merging.base import ModelOutput, SurvivalModel
from app.domain.merging.mixup import Mix, MixupMethod, MixupModel
from app.domain.merging.stacked import (
    hyper_mlp,
    logit,
    seeded,
)
from app.domain.mil import FamilyDims, as_bag, project_mean
from app.domain.relevance import DEFAULT_Z
from app.domain.task_vectors import StateDict

DEFAULT_HEAD_INIT: Literal["fresh", "target"] = "target"  # head_init of the default preset (issue 12, BENCHMARKS.md)


MAX_PENALTY = 100.0  # gamma/beta beyond it: the penalty drowns the survival loss (1e30 "trained" to a 2.5e30 loss)


@dataclass
class StephParams:
    topk: int | None = field(default=5, metadata={"help": "sources kept per bag (top-k of w); null = all"})
    gamma: float = field(default=1e-3, metadata={"help": "γ: weight of the merge-weight regulariser"})
    beta: float = field(default=0.05, metadata={"help": "β: weight of the mean λ² penalty"})
    hyper_hidden: int | None = field(
        default=None, metadata={"help": "width h of the hypernetworks; null = the family's hidden_dim"}
    )
    hyper_dropout: float = field(default=0.25, metadata={"help": "dropout inside the hypernetwork MLPs"})
    lam_mode: Literal["hyper", "fixed", "global"] = field(
        default="hyper",
        metadata={"help": "λ from the r-hypernetwork ('hyper'), a constant ('fixed') or one trainable per source"},
    )
    lam_value: float = field(
        default=0.5,
        metadata={"help": "λ for lam_mode 'fixed' (0 = sources only, 1 = target only); init for 'global'"},
    )
    lam_init: float | None = field(
        default=None,
        metadata={
            "help": "lam_mode 'hyper' only: start λ near this value (0 < lam_init ≤ 1) by setting the bias of "
            "the r-hypernetwork's last layer to 1/lam_init − 1 (and scaling its weights down); null = the "
            "default initialisation (r ≈ 0, so λ starts close to 1)"
        },
    )

    preset: Literal["default", "paper"] = field(
        default="default",
        metadata={
            "help": "'paper': the paper's exact formulation (w = ReLU(·), λ = 1/(1 + ReLU(·)), β-penalty on λ², "
            "top-k 5); 'default': the same except w = softplus(·), which cannot die (w_act)"
        },
    )
    w_act: Literal["softplus", "relu"] | None = field(
        default=None,
        metadata={
            "help": "activation of the merge weights w: 'relu' (paper; all w can be 0 on every bag, the merge "
            "then collapses to θ₀ with no gradient) or 'softplus' (w > 0 always); null = the preset's"
        },
    )
    beta_rule: Literal["relevance", "fixed"] | None = field(
        default=None,
        metadata={
            "help": "'relevance': β applies only when the sources' own models rank the target's train patients "
            "better than chance (z ≥ relevance_z, app.domain.relevance); otherwise β = 0, so λ stays near its "
            "start (mostly the target's own task vector) — the data, not the penalty, decides how much to borrow; "
            "'fixed': β always (the paper); null = the preset's ('relevance' for default, 'fixed' for paper)"
        },
    )
    relevance_z: float = field(
        default=DEFAULT_Z, metadata={"help": "beta_rule 'relevance': the threshold on the relevance z (one-sided)"}
    )
    head_init: Literal["fresh", "target"] | None = field(
        default=None,
        metadata={
            "help": "where the trainable head starts: 'fresh' (a new random Linear, the paper) or 'target' (a copy "
            "of the target checkpoint's head, then trained as usual); null = the preset's"
        },
    )
    crossfit: Literal["off", "split", "split_plugin"] = field(
        default="off",
        metadata={
            "help": "'off': τ_t = the target checkpoint, hypernetworks trained on the whole train split (paper); "
            "'split': the train split is halved (stratified by event, fixed by the seed), a fresh target "
            "model θ_t^A is trained from θ₀ on half A with the same training settings, and the hypernetworks "
            "+ head learn on half B with τ_t^A = θ_t^A − θ₀ (the model keeps τ_t^A); 'split_plugin': the same "
            "training, then τ_t^A is replaced by the full τ_t of the target checkpoint"
        },
    )

    def __post_init__(self) -> None:
        if self.topk is not None and not 1 <= self.topk <= 4096:  # issue 8: ranges checked at submission
            raise ValueError(f"topk must be in [1, 4096] (or null for all sources); got {self.topk}")
        if not (0 <= self.gamma <= MAX_PENALTY and 0 <= self.beta <= MAX_PENALTY):  # NaN fails too
            raise ValueError(
                f"gamma and beta must be finite numbers in [0, {MAX_PENALTY:g}] (penalty weights; the defaults are "
                f"0.001 and 0.05, larger ones drown the survival loss); got gamma={self.gamma}, beta={self.beta}"
            )
        if self.hyper_hidden is not None and not 1 <= self.hyper_hidden <= 2048:
            raise ValueError(f"hyper_hidden must be in [1, 2048] (or null); got {self.hyper_hidden}")
        if not 0.0 <= self.hyper_dropout < 1.0:
            raise ValueError(f"hyper_dropout must be in [0, 1); got {self.hyper_dropout}")
        if self.lam_mode not in ("hyper", "fixed", "global"):
            raise ValueError(f"lam_mode must be 'hyper', 'fixed' or 'global'; got {self.lam_mode!r}")
        if not 0.0 <= self.lam_value <= 1.0:
            raise ValueError(f"lam_value must be in [0, 1]; got {self.lam_value}")
        if self.lam_init is not None and not 0.0 < self.lam_init <= 1.0:
            raise ValueError(f"lam_init must be in (0, 1] (λ = 1/(1 + r) with r ≥ 0), or null; got {self.lam_init}")
        if self.lam_init is not None and self.lam_mode != "hyper":
            raise ValueError(
                f"lam_init only applies to lam_mode 'hyper' (use lam_value for '{self.lam_mode}'); "
                f"got lam_init={self.lam_init}"
            )
        if self.preset not in ("default", "paper"):
            raise ValueError(f"preset must be 'default' or 'paper'; got {self.preset!r}")
        if self.w_act is None:
            self.w_act = "relu" if self.preset == "paper" else "softplus"
        if self.w_act not in ("softplus", "relu"):
            raise ValueError(f"w_act must be 'softplus' or 'relu' (or null); got {self.w_act!r}")
        if self.beta_rule is None:
            self.beta_rule = "fixed" if self.preset == "paper" else "relevance"
        if self.beta_rule not in ("relevance", "fixed"):
            raise ValueError(f"beta_rule must be 'relevance' or 'fixed' (or null); got {self.beta_rule!r}")
        if not -10.0 <= self.relevance_z <= 10.0:
            raise ValueError(f"relevance_z must lie in [−10, 10] (standard errors); got {self.relevance_z}")
        if self.head_init is None:
            self.head_init = "fresh" if self.preset == "paper" else DEFAULT_HEAD_INIT
        if self.head_init not in ("fresh", "target"):
            raise ValueError(f"head_init must be 'fresh' or 'target' (or null); got {self.head_init!r}")
        if self.crossfit not in ("off", "split", "split_plugin"):
            raise ValueError(f"crossfit must be 'off', 'split' or 'split_plugin'; got {self.crossfit!r}")


LAM_INIT_WEIGHT_SCALE = 0.1  # lam_init: MLP_r's last-layer weights are scaled by this, so the bias dominates


def init_lam_bias(mlp_r: nn.Sequential, lam_init: float) -> None:
    """Start λ = 1/(1 + ReLU(mlp_r(e))) near lam_init: last-layer bias = 1/lam_init − 1, weights scaled by
    LAM_INIT_WEIGHT_SCALE (no random numbers are drawn, so every other module's initialisation is unchanged)."""
    last = mlp_r[-1]
    assert isinstance(last, nn.Linear), f"the r-hypernetwork must end with a Linear; got {type(last).__name__}"
    with torch.no_grad():
        last.weight.mul_(LAM_INIT_WEIGHT_SCALE)
        last.bias.fill_(1.0 / lam_init - 1.0)


class StephModel(MixupModel):
    """Per-bag merged ABMIL. Trainable: shared layer, MLP_w, MLP_r (or global λ logits), head."""

    method = "steph"

    def __init__(self, dims: FamilyDims, bin_edges: list[float], *, params: StephParams, seed: int, **kwargs: Any):
        """kwargs: base_encoder, stack, source_names, target_name (see MixupModel)."""
        super().__init__(dims, bin_edges, params=params, seed=seed, **kwargs)
        width, m = params.hyper_hidden or dims.hidden_dim, self.n_sources
        with seeded(seed + 1):
            self.shared = nn.Linear(dims.in_dim, width)
            self.mlp_w = hyper_mlp(width, m, params.hyper_dropout)
            self.mlp_r = hyper_mlp(width, m, params.hyper_dropout) if params.lam_mode == "hyper" else None
        if self.mlp_r is not None and params.lam_init is not None:
            init_lam_bias(self.mlp_r, params.lam_init)
        self.lam_logit = (
            nn.Parameter(torch.full((m,), logit(params.lam_value))) if params.lam_mode == "global" else None
        )

    def hyper(self, bag: Tensor) -> Mix:
        """bag [N, D] -> Mix(w [M], λ [M], S [k]) from the hypernetworks."""
        bag = as_bag(bag)
        if bag.shape[1] != self.dims.in_dim:
            raise ValueError(f"bag has D = {bag.shape[1]}, the model expects D = {self.dims.in_dim}")
        e = project_mean(bag, self.shared.weight, self.shared.bias)  # issue 7: bf16 bag / big-bag memory
        raw_w = self.mlp_w(e)  # issue 12: softplus (default) cannot die; ReLU is the 'paper' preset
        w = nn.functional.softplus(raw_w) if self.params.w_act == "softplus" else torch.relu(raw_w)
        if self.mlp_r is not None:
            lam = 1.0 / (1.0 + torch.relu(self.mlp_r(e)))
        elif self.lam_logit is not None:
            lam = torch.sigmoid(self.lam_logit)
        else:
            lam = torch.full_like(w, self.params.lam_value)
        return self.select(w, lam)

    def merged_encoder_for(self, bag: Tensor) -> StateDict:
        """θ*(x) for one bag (encoder keys in the reference layout)."""
        return self.merged_encoder(self.hyper(bag))

    def aux_loss(self, mix: Mix) -> Tensor:
        """γ [(logsumexp_i w_i)² + (1/k) Σ_{i∈S} w_i] + β mean_{i∈S} λ_i² (β term only for learnable λ)."""
        w_sel = mix.weights[mix.selected]
        aux = self.params.gamma * (torch.logsumexp(mix.weights, dim=0) ** 2 + w_sel.sum() / self.k)
        if self.params.lam_mode != "fixed":
            aux = aux + self.params.beta * (mix.lam[mix.selected] ** 2).mean()
        return aux

    def forward(self, bag: Tensor) -> ModelOutput:
        mix = self.hyper(bag)
        return self.score(bag, mix, self.aux_loss(mix))

    def replace_target_vector(self, target_vector: dict[str, Tensor]) -> None:
        """Overwrite τ_t (row 0 of every stacked encoder task vector) in place; the hypernetworks, head and
        source task vectors are unchanged. `target_vector`: {encoder key: τ_t}, e.g. row 0 of
        task_vector_stack(inputs). Used by crossfit "split_plugin"."""
        with torch.no_grad():
            for key in self.task_vectors.names:
                row = self.task_vectors.get(key)[0]
                if tuple(target_vector[key].shape) != tuple(row.shape):
                    raise ValueError(
                        f"target task vector {key!r} has shape {list(target_vector[key].shape)}, "
                        f"the model holds {list(row.shape)}"
                    )
                row.copy_(target_vector[key].to(device=row.device, dtype=row.dtype))


class StephMethod(MixupMethod):
    name = "steph"
    paper = "STEPH (CVPR 2026): sparse task-vector mixup with hypernetworks"
    summary = (
        "Per-bag merge: hypernetworks read the bag and pick sparse weights w and mix ratios λ; the encoder "
        "is θ₀ + Σ_{i∈top-k} w_i (λ_i τ_t + (1 − λ_i) τ_{s_i}); a head (by default starting as the target's) trains "
        "with the hypernetworks."
    )
    params_type = StephParams
    model_type = StephModel

    def build(self, inputs: Any, params: Any, *, seed: int) -> SurvivalModel:
        """MixupMethod.build; head_init 'target' then copies the target checkpoint's head into the trainable head."""
        model = super().build(inputs, params, seed=seed)
        if params.head_init == "target":
            assert isinstance(model, MixupModel)
            with torch.no_grad():
                model.head.weight.copy_(inputs.target["pred_head.weight"])
                model.head.bias.copy_(inputs.target["pred_head.bias"])
        return model

    def adapts(self, params: Any, inputs: Any) -> bool:
        return (
            params.beta_rule == "relevance" and params.beta > 0 and params.lam_mode == "hyper" and bool(inputs.sources)
        )

    def adapt(
        self, params: Any, inputs: Any, config: Any, samples: Any, should_cancel: Any = None
    ) -> tuple[Any, dict[str, Any] | None]:
        """beta_rule 'relevance' (the default): measure the sources' relevance on the train samples; below the
        threshold train with β = 0 (notes["relevance"] says so, with beta_used)."""
        if not self.adapts(params, inputs):
            return params, None
        from dataclasses import replace

        from app.domain.relevance import check_sources

        rel = check_sources(inputs, samples, config, params.relevance_z, should_cancel)
        beta = params.beta if rel["passed"] else 0.0
        rel["beta_used"] = beta
        rel["reason"] += f": β = {beta:g}" + ("" if rel["passed"] else " (no λ² penalty: λ stays mostly the target's)")
        return (params if beta == params.beta else replace(params, beta=beta)), rel

    def load(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> SurvivalModel:
        """Rebuild a STEPH model. Artifacts written before w_act existed were trained with the paper's w = ReLU(·):
        a config without `w_act` loads as the `paper` preset, so an old artifact predicts exactly as before."""
        params = dict(config.get("params") or {})
        if "w_act" not in params:
            params.setdefault("preset", "paper")
        return super().load(tensors, {**config, "params": params})
