"""Gated-attention MIL (ABMIL) with the reference state-dict layout (SPEC §2).

feat_proj   = Sequential(Linear(D, hidden), ReLU)
attention_a = Sequential(Linear(hidden, attn), Tanh, Dropout(p))
attention_b = Sequential(Linear(hidden, attn), Sigmoid, Dropout(p))
attention_c = Linear(attn, 1)
a = softmax_n(attention_c(attention_a(h) * attention_b(h)));  z = sum_n a_n h_n
pred_head   = Linear(hidden, n_bins);  hazards = sigmoid(pred_head(z))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

ENCODER_PREFIXES = ("feat_proj.", "attention_net.")
HEAD_PREFIX = "pred_head."


@dataclass(frozen=True)
class FamilyDims:
    """Dimensions of one model family: input D, hidden (512), attention (384), n_bins (32)."""

    in_dim: int
    hidden_dim: int = 512
    attn_dim: int = 384
    n_bins: int = 32
    dropout: float = 0.25

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FamilyDims:
        return cls(**{k: data[k] for k in ("in_dim", "hidden_dim", "attn_dim", "n_bins", "dropout") if k in data})


def reference_shapes(dims: FamilyDims) -> dict[str, tuple[int, ...]]:
    """The exact reference state-dict keys and shapes for `dims`."""
    d, h, a, b = dims.in_dim, dims.hidden_dim, dims.attn_dim, dims.n_bins
    return {
        "feat_proj.0.weight": (h, d),
        "feat_proj.0.bias": (h,),
        "attention_net.attention_a.0.weight": (a, h),
        "attention_net.attention_a.0.bias": (a,),
        "attention_net.attention_b.0.weight": (a, h),
        "attention_net.attention_b.0.bias": (a,),
        "attention_net.attention_c.weight": (1, a),
        "attention_net.attention_c.bias": (1,),
        "pred_head.weight": (b, h),
        "pred_head.bias": (b,),
    }


def infer_dims(state_dict: dict[str, Tensor], dropout: float = 0.25) -> FamilyDims:
    """Read (D, hidden, attn, n_bins) off a reference-layout state dict.

    Raises KeyError naming the missing key when the layout is not ABMIL's.
    """
    for key in reference_shapes(FamilyDims(in_dim=1)):
        if key not in state_dict:
            raise KeyError(f"missing key {key!r}: not an ABMIL state dict in the reference layout (SPEC §2)")
    hidden, in_dim = state_dict["feat_proj.0.weight"].shape
    attn = state_dict["attention_net.attention_a.0.weight"].shape[0]
    n_bins = state_dict["pred_head.weight"].shape[0]
    return FamilyDims(int(in_dim), int(hidden), int(attn), int(n_bins), dropout)


def is_encoder_key(key: str) -> bool:
    return key.startswith(ENCODER_PREFIXES)


def encoder_part(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The encoder entries (everything but pred_head.*)."""
    return {k: v for k, v in state.items() if is_encoder_key(k)}


def head_part(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}


class GatedAttention(nn.Module):
    def __init__(self, hidden_dim: int, attn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(hidden_dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(hidden_dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(attn_dim, 1)

    def forward(self, h: Tensor) -> Tensor:
        """h [N, hidden] -> attention logits [N]."""
        return self.attention_c(self.attention_a(h) * self.attention_b(h)).squeeze(-1)


class Encoded(NamedTuple):
    slide_feature: Tensor  # [hidden]
    attention: Tensor  # [N], softmax weights


def as_bag(bag: Tensor) -> Tensor:
    """Accept [N, D] or [1, N, D]; return [N, D]."""
    if bag.dim() == 3 and bag.shape[0] == 1:
        bag = bag[0]
    if bag.dim() != 2:
        raise ValueError(f"a bag must be [N, D] (or [1, N, D]); got shape {tuple(bag.shape)}")
    if bag.shape[0] == 0:
        raise ValueError("a bag must hold at least one patch; got N = 0")
    return bag


class ABMIL(nn.Module):
    """ABMIL survival model. forward(bag [N, D]) -> hazard logits [n_bins]."""

    def __init__(self, dims: FamilyDims) -> None:
        super().__init__()
        self.dims = dims
        self.feat_proj = nn.Sequential(nn.Linear(dims.in_dim, dims.hidden_dim), nn.ReLU())
        self.attention_net = GatedAttention(dims.hidden_dim, dims.attn_dim, dims.dropout)
        self.pred_head = nn.Linear(dims.hidden_dim, dims.n_bins)

    def encode(self, bag: Tensor) -> Encoded:
        """bag [N, D] -> slide feature z [hidden] and attention a [N]."""
        bag = as_bag(bag)
        if bag.shape[1] != self.dims.in_dim:
            raise ValueError(f"bag has D = {bag.shape[1]}, the model expects D = {self.dims.in_dim}")
        h = self.feat_proj(bag)
        attention = torch.softmax(self.attention_net(h), dim=0)
        return Encoded(attention @ h, attention)

    def forward(self, bag: Tensor) -> Tensor:
        return self.pred_head(self.encode(bag).slide_feature)


def new_abmil(dims: FamilyDims, seed: int = 0) -> ABMIL:
    """A freshly initialised ABMIL (deterministic for `seed`) — e.g. a family's θ₀."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return ABMIL(dims)
    finally:
        torch.random.set_rng_state(gen_state)


def abmil_from_state(state: dict[str, Tensor], dropout: float = 0.25) -> ABMIL:
    model = ABMIL(infer_dims(state, dropout))
    model.load_state_dict(state)
    return model
