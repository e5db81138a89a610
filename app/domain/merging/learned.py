"""learned_weights: STEPH's "global trainable w" ablation (SPEC §1, mean C-index 0.6490 in the paper).

One trainable weight per source, shared by every bag (no hypernetwork), and STEPH's task-vector mixup:

    θ* = θ₀ + Σ_{i∈S} w_i (λ_i τ_t + (1 − λ_i) τ_{s_i})       (encoder only)

Choices: w is an unconstrained trainable vector initialised at `init_weight` (0.3, the usual task-arithmetic
scale) — it may become negative, as in AdaMerging; λ is one trainable value per source (λ = sigmoid(logit),
initialised at `lam_value`) or fixed (`lam_mode="fixed"`); S = top-k of w (default: all sources, since
equal initial weights make a top-k arbitrary). The encoder is merged once per forward call (it does not depend
on the bag). aux_loss = 0. A fresh head is trained with w and λ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from app.domain.merging.base import ModelOutput
from app.domain.merging.mixup import Mix, MixupMethod, MixupModel
from app.domain.merging.stacked import logit
from app.domain.mil import FamilyDims
from app.domain.task_vectors import StateDict


@dataclass
class LearnedWeightsParams:
    init_weight: float = field(default=0.3, metadata={"help": "initial value of every source weight w_i"})
    topk: int | None = field(default=None, metadata={"help": "sources kept (top-k of w); null = all"})
    lam_mode: Literal["global", "fixed"] = field(
        default="global",
        metadata={"help": "λ: one trainable value per source ('global') or constant ('fixed')"},
    )
    lam_value: float = field(
        default=0.5, metadata={"help": "λ for lam_mode 'fixed' (0 = sources only); initial λ for 'global'"}
    )

    def __post_init__(self) -> None:
        if not -10.0 <= self.init_weight <= 10.0:
            raise ValueError(f"init_weight must be in [-10, 10]; got {self.init_weight}")
        if self.topk is not None and not 1 <= self.topk <= 4096:
            raise ValueError(f"topk must be in [1, 4096] (or null for all sources); got {self.topk}")
        if self.lam_mode not in ("global", "fixed"):
            raise ValueError(f"lam_mode must be 'global' or 'fixed'; got {self.lam_mode!r}")
        if not 0.0 <= self.lam_value <= 1.0:
            raise ValueError(f"lam_value must be in [0, 1]; got {self.lam_value}")


class LearnedWeightsModel(MixupModel):
    """One merged ABMIL encoder for all bags. Trainable: w [M], λ logits [M] (global mode), head."""

    method = "learned_weights"

    def __init__(self, dims: FamilyDims, bin_edges: list[float], **kwargs: Any) -> None:
        super().__init__(dims, bin_edges, **kwargs)
        m, params = self.n_sources, self.params
        self.weights = nn.Parameter(torch.full((m,), float(params.init_weight)))
        global_lam = params.lam_mode == "global"
        self.lam_logit = nn.Parameter(torch.full((m,), logit(params.lam_value))) if global_lam else None

    def mix(self) -> Mix:
        """The current global Mix(w [M], λ [M], S [k])."""
        if self.lam_logit is not None:
            lam = torch.sigmoid(self.lam_logit)
        else:
            lam = torch.full_like(self.weights, self.params.lam_value)
        return self.select(self.weights, lam)

    def merged_encoder_state(self) -> StateDict:
        """θ* (encoder keys), the same for every bag."""
        return self.merged_encoder(self.mix())

    def forward(self, bag: Tensor) -> ModelOutput:
        return self.score(bag, self.mix(), self.weights.new_zeros(()))


class LearnedWeightsMethod(MixupMethod):
    name = "learned_weights"
    paper = "STEPH (CVPR 2026) ablation 'global trainable w'; cf. AdaMerging https://arxiv.org/abs/2310.02575"
    summary = (
        "One trainable weight per source (and a trainable mix ratio λ with the target's task vector), "
        "shared by every bag: θ₀ + Σ w_i (λ_i τ_t + (1 − λ_i) τ_{s_i}); a fresh head is trained with them."
    )
    params_type = LearnedWeightsParams
    model_type = LearnedWeightsModel
