"""routing: the ROUPKT baseline — a mixture of experts over every source model's slide features (SPEC §5).

    f_j = ABMIL_encoder[θ₀ + τ_j](bag)                frozen full encoders, j over sources (+ the target)
    p   = softmax(Linear_{h→E}(RouterABMIL(bag)))    router: a trainable ABMIL encoder initialised at θ_t
    S   = top-k(p)                                    (no renormalisation)
    z   = Σ_{j∈S} p_j · ReLU(W_j f_j + b_j);   logits = head(z)
    aux = balance_coef · E · Σ_{j∈S} p_j + z_coef · (logsumexp router logits)²

Averaged over a training group, the balance term is the switch-transformer loss E · Σ_j f_j P_j (here per bag
with f_j = 1[j ∈ S]). Only the selected experts' encoders are run (the pure mil.encode_with, batched with
torch.func.vmap over the experts' stacked parameters; no shared module is mutated). Expert
order: sources 0..M−1, then the target (index M) when include_target. ModelOutput.attention is the p-weighted
mean of the selected experts' attention maps (renormalised to sum to 1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap

from app.domain.merging.base import MergeInputs, MergeMethod, ModelOutput, SurvivalModel
from app.domain.merging.stacked import (
    FrozenState,
    encoder_from_state,
    encoder_shapes,
    load_exact,
    make_head,
    resolve_k,
    seeded,
    sources_info,
    validate_inputs,
)
from app.domain.mil import FamilyDims, encode_with


@dataclass
class RoutingParams:
    topk: int | None = field(default=5, metadata={"help": "experts used per bag (top-k of p); null = all"})
    include_target: bool = field(default=True, metadata={"help": "the target's own model is an expert too"})
    balance_coef: float = field(default=0.01, metadata={"help": "weight of the load-balancing loss"})
    z_coef: float = field(default=0.01, metadata={"help": "weight of the router z-loss"})

    def __post_init__(self) -> None:
        if self.topk is not None and not 1 <= self.topk <= 4096:
            raise ValueError(f"topk must be in [1, 4096] (or null for all experts); got {self.topk}")
        if not (0 <= self.balance_coef < float("inf") and 0 <= self.z_coef < float("inf")):  # NaN fails too
            raise ValueError(f"balance_coef and z_coef must be finite and ≥ 0; got {self.balance_coef}, {self.z_coef}")


class RoutingModel(SurvivalModel):
    """Mixture of frozen expert encoders. Trainable: router encoder + router_fc, experts (W, b), head."""

    method = "routing"

    def __init__(
        self,
        dims: FamilyDims,
        bin_edges: list[float],
        *,
        expert_encoders: dict[str, Tensor],
        router_init: dict[str, Tensor],
        source_names: list[str],
        target_name: str,
        params: RoutingParams,
        seed: int,
    ) -> None:
        super().__init__(dims, bin_edges)
        self.params = params
        self.source_names, self.target_name = list(source_names), target_name
        self.expert_names = self.source_names + ([target_name] if params.include_target else [])
        n, h = len(self.expert_names), dims.hidden_dim
        self.experts_bank = FrozenState(expert_encoders)
        self.router = encoder_from_state(dims, router_init, trainable=True)
        bound = 1.0 / h**0.5
        with seeded(seed + 1):
            self.router_fc = nn.Linear(h, n)
            self.expert_weight = nn.Parameter(torch.empty(n, h, h).uniform_(-bound, bound))
            self.expert_bias = nn.Parameter(torch.empty(n, h).uniform_(-bound, bound))
        self.head = make_head(dims, seed)

    @property
    def k(self) -> int:
        return resolve_k(self.params.topk, len(self.expert_names))

    def expert_features(self, bag: Tensor, selected: Tensor) -> tuple[Tensor, Tensor]:
        """Slide features [k, hidden] and attention [k, N] of the selected frozen experts (never dropout)."""
        params = {key: value.index_select(0, selected) for key, value in self.experts_bank.as_dict().items()}

        def run(p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            encoded = encode_with(p, bag, training=False)
            return encoded.slide_feature, encoded.attention

        return vmap(run)(params)

    def route(self, bag: Tensor) -> tuple[Tensor, Tensor]:
        """Router logits [E] and probabilities p [E] for the bag."""
        logits = self.router_fc(self.router(bag).slide_feature)
        return logits, torch.softmax(logits, dim=0)

    def forward(self, bag: Tensor) -> ModelOutput:
        router_logits, p = self.route(bag)
        selected = torch.topk(p, self.k).indices
        features, attention = self.expert_features(bag, selected)
        out = torch.relu(
            torch.einsum("kij,kj->ki", self.expert_weight[selected], features) + self.expert_bias[selected]
        )
        p_sel = p[selected]
        z = (p_sel.unsqueeze(1) * out).sum(dim=0)
        logits = self.head(z)
        balance = len(self.expert_names) * p_sel.sum()
        aux = self.params.balance_coef * balance + self.params.z_coef * torch.logsumexp(router_logits, 0) ** 2
        mixed_attention = (p_sel.unsqueeze(1) * attention).sum(dim=0) / p_sel.sum()
        info = {"sources": sources_info(self.expert_names, selected, p, None)}
        return ModelOutput(logits, aux, mixed_attention, info)

    def artifact_config(self) -> dict[str, Any]:
        return {
            **super().artifact_config(),
            "params": dataclasses.asdict(self.params),
            "source_names": self.source_names,
            "target_name": self.target_name,
        }


class RoutingMethod(MergeMethod):
    name = "routing"
    paper = "ROUPKT: routing over source models' slide features (baseline in STEPH, CVPR 2026)"
    summary = (
        "Mixture of experts: every source model (and the target's) encodes the bag; a trainable ABMIL router "
        "picks the top-k experts, whose features go through small trainable experts and a fresh head."
    )
    params_type = RoutingParams
    learned = True

    def build(self, inputs: MergeInputs, params: RoutingParams, *, seed: int) -> SurvivalModel:
        validate_inputs(inputs, min_sources=0 if params.include_target else 1)
        members = list(inputs.sources) + ([inputs.target] if params.include_target else [])
        keys = encoder_shapes(inputs.dims)
        experts = {k: torch.stack([m[k].float() for m in members]) for k in keys}
        return RoutingModel(
            inputs.dims, inputs.bin_edges, expert_encoders=experts, router_init=inputs.target,
            source_names=inputs.source_names, target_name=inputs.target_name, params=params, seed=seed,
        )  # fmt: skip

    def load(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> SurvivalModel:
        dims, params = FamilyDims.from_dict(config["dims"]), self.parse_params(config["params"])
        n = len(config["source_names"]) + int(params.include_target)
        shapes = encoder_shapes(dims)
        model = RoutingModel(
            dims, config["bin_edges"], expert_encoders={k: torch.zeros((n, *s)) for k, s in shapes.items()},
            router_init={k: torch.zeros(s) for k, s in shapes.items()}, source_names=config["source_names"],
            target_name=config["target_name"], params=params, seed=0,
        )  # fmt: skip
        load_exact(model, tensors, self.name)
        return model.eval()
