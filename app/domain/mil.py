"""Gated-attention MIL (ABMIL) with the reference state-dict layout (SPEC §2).

feat_proj   = Sequential(Linear(D, hidden), ReLU)
attention_a = Sequential(Linear(hidden, attn), Tanh, Dropout(p))
attention_b = Sequential(Linear(hidden, attn), Sigmoid, Dropout(p))
attention_c = Linear(attn, 1)
a = softmax_n(attention_c(attention_a(h) * attention_b(h)));  z = sum_n a_n h_n
pred_head   = Linear(hidden, n_bins);  hazards = sigmoid(pred_head(z))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
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


REDUCED_DTYPES = (torch.bfloat16, torch.float16)


def project(bag: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """ReLU(bag @ weightᵀ + bias): bag [N, D], weight [H, D], bias [H] -> [N, H] float32.

    The one N×D×H matmul of an encoder (and of STEPH's hypernetwork input layer). It runs in the bag's dtype
    when that is bfloat16 or float16 (weight and bias are cast to it, the result back to float32: reduced
    precision for the big matmul only); any other bag dtype is computed in float32.
    """
    if bag.dtype in REDUCED_DTYPES:
        return F.linear(bag, weight.to(bag.dtype), bias.to(bag.dtype)).relu_().float()
    return F.linear(bag if bag.dtype == torch.float32 else bag.float(), weight, bias).relu_()  # in place: memory


CHUNK_ROWS = 8192  # inference processes bigger bags in row blocks of this size (memory: one block, not [N, attn])


def project_mean(bag: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """mean_n ReLU(x_n Wᵀ + b): bag [N, D] -> [H] float32 (STEPH's hypernetwork input e).

    Without autograd (inference) a bag of more than CHUNK_ROWS patches is projected block by block, so the
    [N, H] activations never exist at once; with autograd (training) it is one `project(...).mean(0)`.
    """
    if torch.is_grad_enabled() or bag.shape[0] <= CHUNK_ROWS:
        return project(bag, weight, bias).mean(dim=0)
    total = torch.stack([project(block, weight, bias).sum(dim=0) for block in bag.split(CHUNK_ROWS)]).sum(dim=0)
    return total / bag.shape[0]


def _gated_logits(h: Tensor, params: Mapping[str, Tensor], dropout_p: float, training: bool) -> Tensor:
    """attention_c(Dropout(tanh(attention_a(h))) ⊙ Dropout(σ(attention_b(h)))): h [N, hidden] -> [N]."""
    pre = "attention_net.attention_"
    gate_a = torch.tanh(F.linear(h, params[pre + "a.0.weight"], params[pre + "a.0.bias"]))
    gate_a = F.dropout(gate_a, dropout_p, training)
    gate_b = torch.sigmoid(F.linear(h, params[pre + "b.0.weight"], params[pre + "b.0.bias"]))
    gate_b = F.dropout(gate_b, dropout_p, training)
    return F.linear(gate_a * gate_b, params[pre + "c.weight"], params[pre + "c.bias"]).squeeze(-1)


def encode_with(
    params: Mapping[str, Tensor], bag: Tensor, *, dropout_p: float = 0.0, training: bool = False
) -> Encoded:
    """The ABMIL encoder as a pure function of its parameters (reference keys, prefix-free of pred_head):

        h = ReLU(x Wᶠᵀ + bᶠ)  [N, hidden];  g = Dropout(tanh(h Wᵃᵀ + bᵃ)) ⊙ Dropout(σ(h Wᵇᵀ + bᵇ))  [N, attn]
        a = softmax_n(g Wᶜᵀ + bᶜ)  [N];  z = Σ_n a_n h_n  [hidden]

    `params` holds the eight encoder keys (feat_proj.0.*, attention_net.attention_{a,b,c}.*); nothing is
    mutated, so any number of threads may call it at once with shared or per-call parameters. Dropout (p =
    `dropout_p`, only when `training`) draws from the global RNG exactly as nn.Dropout does (a, then b).
    A bfloat16/float16 bag runs the N×D×hidden matmul in that dtype (see `project`); the rest is float32.
    Without autograd, the gates of a bag of more than CHUNK_ROWS patches are computed block by block (memory).
    """
    bag = as_bag(bag)
    in_dim = params["feat_proj.0.weight"].shape[-1]
    if bag.shape[1] != in_dim:
        raise ValueError(f"bag has D = {bag.shape[1]}, the model expects D = {in_dim}")
    h = project(bag, params["feat_proj.0.weight"], params["feat_proj.0.bias"])
    if training or torch.is_grad_enabled() or h.shape[0] <= CHUNK_ROWS:
        logits = _gated_logits(h, params, dropout_p, training)
    else:  # inference on a big bag: the [N, attn] gates one block of rows at a time
        logits = torch.cat([_gated_logits(block, params, 0.0, False) for block in h.split(CHUNK_ROWS)])
    attention = torch.softmax(logits, dim=0)
    return Encoded(attention @ h, attention)


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
        params = dict(self.feat_proj.named_parameters(prefix="feat_proj"))
        params.update(self.attention_net.named_parameters(prefix="attention_net"))
        return encode_with(params, bag, dropout_p=self.dims.dropout, training=self.training)

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
