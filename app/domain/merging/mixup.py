"""Common model for the task-vector mixup merges (STEPH and its global-weights ablation).

    θ*(w, λ) = θ₀ + Σ_{i∈S} w_i (λ_i τ_t + (1 − λ_i) τ_{s_i}) = θ₀ + tensordot(c, T)     (encoder only)
    logits   = head(ABMIL_encoder[θ*](bag).slide_feature),  head = a fresh trainable Linear(hidden → n_bins)

θ₀ and T are frozen buffers; the encoder is the pure function mil.encode_with(θ*, bag) (no module is
mutated, so concurrent requests on one shared model cannot disturb each other), and gradients flow into w
and λ (and whatever produces them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch
from torch import Tensor

from app.domain.merging.base import MergeInputs, MergeMethod, ModelOutput, SurvivalModel
from app.domain.merging.stacked import (
    FrozenState,
    encoder_shapes,
    load_exact,
    make_head,
    merge_stack,
    mix_coefficients,
    resolve_k,
    sources_info,
    task_vector_stack,
    validate_inputs,
)
from app.domain.mil import FamilyDims, encode_with
from app.domain.task_vectors import StateDict


class Mix(NamedTuple):
    """One merge: weights w [M] (≥ 0 for STEPH), mix ratios λ [M], selected indices S [k] (by w, desc.)."""

    weights: Tensor
    lam: Tensor
    selected: Tensor


def empty_bank(dims: FamilyDims, n_sources: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Zero θ₀ encoder and zero stack [M+1, *shape] with the right shapes (a skeleton for load())."""
    shapes = encoder_shapes(dims)
    base = {k: torch.zeros(s) for k, s in shapes.items()}
    stack = {k: torch.zeros((n_sources + 1, *s)) for k, s in shapes.items()}
    return base, stack


class MixupModel(SurvivalModel):
    """Base of StephModel and LearnedWeightsModel: frozen θ₀ + stacked τ, functional encoder, fresh head."""

    def __init__(
        self,
        dims: FamilyDims,
        bin_edges: list[float],
        *,
        base_encoder: dict[str, Tensor],
        stack: dict[str, Tensor],
        source_names: list[str],
        target_name: str,
        params: Any,
        seed: int,
    ) -> None:
        super().__init__(dims, bin_edges)
        self.params = params
        self.source_names = list(source_names)
        self.target_name = target_name
        self.base = FrozenState(base_encoder)
        self.task_vectors = FrozenState(stack)
        self.head = make_head(dims, seed)

    @property
    def n_sources(self) -> int:
        return len(self.source_names)

    @property
    def k(self) -> int:
        return resolve_k(getattr(self.params, "topk", None), self.n_sources)

    def select(self, w: Tensor, lam: Tensor) -> Mix:
        """Top-k of w (k = params.topk clipped to M; None = all), no renormalisation."""
        return Mix(w, lam, torch.topk(w, self.k).indices)

    def merged_encoder(self, mix: Mix) -> StateDict:
        """θ*(x) for one merge: {encoder key: θ₀ + tensordot(c, T)}, differentiable in w and λ."""
        c = mix_coefficients(mix.weights, mix.lam, mix.selected)
        return merge_stack(self.base.as_dict(), self.task_vectors.as_dict(), c)

    def merged_encoder_from(self, w: Tensor, lam: Tensor) -> StateDict:
        """θ* for given w [M] and λ [M] (top-k applied as in forward). For tests and explanations."""
        return self.merged_encoder(self.select(w, lam))

    def score(self, bag: Tensor, mix: Mix, aux_loss: Tensor) -> ModelOutput:
        """Run the merged encoder on the bag (pure: encode_with), then the head; info lists the selected sources."""
        params = self.merged_encoder(mix)
        encoded = encode_with(params, bag, dropout_p=self.dims.dropout, training=self.training)
        logits = self.head(encoded.slide_feature)
        info = {"sources": sources_info(self.source_names, mix.selected, mix.weights, mix.lam)}
        return ModelOutput(logits, aux_loss, encoded.attention, info)

    def artifact_config(self) -> dict[str, Any]:
        return {
            **super().artifact_config(),
            "params": dataclasses.asdict(self.params),
            "source_names": self.source_names,
            "target_name": self.target_name,
        }


class MixupMethod(MergeMethod):
    """build/load shared by the mixup merges: subclasses set `model_type` (a MixupModel subclass)."""

    model_type: type[MixupModel]
    learned = True

    def build(self, inputs: MergeInputs, params: Any, *, seed: int) -> SurvivalModel:
        validate_inputs(inputs)
        base = {k: inputs.base[k] for k in encoder_shapes(inputs.dims)}
        return self.model_type(
            inputs.dims, inputs.bin_edges, base_encoder=base, stack=task_vector_stack(inputs),
            source_names=inputs.source_names, target_name=inputs.target_name, params=params, seed=seed,
        )  # fmt: skip

    def load(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> SurvivalModel:
        dims = FamilyDims.from_dict(config["dims"])
        base, stack = empty_bank(dims, len(config["source_names"]))
        model = self.model_type(
            dims, config["bin_edges"], base_encoder=base, stack=stack, source_names=config["source_names"],
            target_name=config["target_name"], params=self.parse_params(config["params"]), seed=0,
        )  # fmt: skip
        load_exact(model, tensors, self.name)
        return model.eval()
