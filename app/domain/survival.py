"""Discrete-time survival: binning, the NLL loss, hazards -> survival curve -> risk (SPEC §3)."""

from __future__ import annotations

from collections.abc import Sequence

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


def survival_at_times(surv: Tensor, bin_edges: Sequence[float], times_days: Sequence[float] | Tensor) -> Tensor:
    """S(t) at arbitrary times from a discrete survival curve: a right-continuous step function over the edges.

    surv [..., n_bins] is `survival_curve(logits)` (S_j = survival past bin j); bin_edges has n_bins + 1 values
    (0, 365, …). With S_pad = [1, S_0, …, S_{n_bins-1}]:

        S(t) = S_pad[j] for t in [edge_j, edge_{j+1})   (j = time_to_bin(t): the bin holding t)

    i.e. S = 1 before edge_1 (the first year with default edges), S(edge_j) = S_{j-1}, and S stays at
    S_pad[n_bins - 1] from the start of the open-ended last bin on. Times are in days; returns
    [..., len(times_days)] in surv's dtype. ValueError when the edges do not fit the curve or a time is not finite.
    """
    n_bins = surv.shape[-1]
    if len(bin_edges) != n_bins + 1:
        raise ValueError(
            f"bin_edges must have n_bins + 1 = {n_bins + 1} values for a curve of {n_bins} bins; got {len(bin_edges)}"
        )
    t = torch.as_tensor(times_days, dtype=torch.float64).reshape(-1)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("times_days holds NaN or Inf values; pass finite times in days")
    surv_pad = torch.cat([torch.ones_like(surv[..., :1]), surv], dim=-1)
    return surv_pad[..., time_to_bin(t, list(bin_edges)).to(surv.device)]


def survival_at(times_days: list[float], logits: Tensor, bin_edges: list[float]) -> Tensor:
    """Step-function survival at arbitrary times from logits: survival_at_times(survival_curve(logits), …)."""
    return survival_at_times(survival_curve(logits), bin_edges, times_days)
