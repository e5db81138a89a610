"""Discrete-time survival: binning, the NLL loss, hazards -> survival curve -> risk (SPEC §3)."""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_N_BINS = 32
DEFAULT_BIN_WIDTH_DAYS = 365.0
EPS = 1e-7


def default_bin_edges(n_bins: int = DEFAULT_N_BINS, width_days: float = DEFAULT_BIN_WIDTH_DAYS) -> list[float]:
    """Edges 0, w, 2w, …, n_bins·w (n_bins + 1 values); the last bin is open-ended."""
    return [i * width_days for i in range(n_bins + 1)]


def time_to_bin(time_days: Tensor, bin_edges: list[float]) -> Tensor:
    """time [B] (days) -> bin index [B] (long): the bin whose [edge_j, edge_j+1) holds t, last bin open.

    With default edges this is min(floor(t / 365), 31).
    """
    n_bins = len(bin_edges) - 1
    edges = torch.as_tensor(bin_edges[1:-1], dtype=torch.float64)
    t = torch.as_tensor(time_days, dtype=torch.float64)
    return torch.bucketize(t, edges, right=True).clamp(0, n_bins - 1).long()


def nll_loss(logits: Tensor, bins: Tensor, events: Tensor, alpha: float = 0.5, eps: float = EPS) -> Tensor:
    """Discrete-time survival NLL, mean over the batch.

    logits [B, n_bins]; bins [B] long; events [B] (1 = event observed, 0 = censored).
    h = sigmoid(logits); S = cumprod(1 - h); S_pad = [1, S]
    uncensored_b = -e_b (log S_pad[bin] + log h[bin]);  censored_b = -(1 - e_b) log S_pad[bin + 1]
    loss = mean((1 - alpha)(uncensored + censored) + alpha · uncensored)
    """
    if logits.dim() == 1:
        logits = logits.unsqueeze(0)
    assert logits.dim() == 2, f"logits must be [B, n_bins], got {tuple(logits.shape)}"
    bins = bins.reshape(-1, 1).long()
    events = events.reshape(-1, 1).to(logits.dtype)
    hazards = torch.sigmoid(logits)
    surv = torch.cumprod(1 - hazards, dim=1)
    surv_pad = torch.cat([torch.ones_like(surv[:, :1]), surv], dim=1)
    s_prev = torch.gather(surv_pad, 1, bins).clamp(min=eps)
    h_this = torch.gather(hazards, 1, bins).clamp(min=eps)
    s_this = torch.gather(surv_pad, 1, bins + 1).clamp(min=eps)
    uncensored = -events * (torch.log(s_prev) + torch.log(h_this))
    censored = -(1 - events) * torch.log(s_this)
    loss = (1 - alpha) * (uncensored + censored) + alpha * uncensored
    return loss.mean()


def survival_curve(logits: Tensor) -> Tensor:
    """logits [..., n_bins] -> S [..., n_bins], S_j = prod_{i<=j} (1 - h_i): survival past bin j."""
    return torch.cumprod(1 - torch.sigmoid(logits), dim=-1)


def risk_score(logits: Tensor) -> Tensor:
    """logits [..., n_bins] -> risk [...] = -sum_j S_j (higher = worse prognosis)."""
    return -survival_curve(logits).sum(dim=-1)


def survival_at(times_days: list[float], logits: Tensor, bin_edges: list[float]) -> Tensor:
    """Step-function survival at arbitrary times: S(t) = S_{j-1} for t in [edge_j, edge_j+1), S = 1 before edge_1."""
    surv = survival_curve(logits)
    surv_pad = torch.cat([torch.ones_like(surv[..., :1]), surv], dim=-1)
    out = []
    for t in times_days:
        j = int(time_to_bin(torch.tensor([float(t)]), bin_edges)[0])
        out.append(surv_pad[..., j])
    return torch.stack(out, dim=-1)
