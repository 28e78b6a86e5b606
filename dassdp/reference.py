"""The naive [B, C_out, C_in] formulation of DA-SSDP (the authors' form): for tests and benchmarks only."""
from __future__ import annotations

import torch
from torch import Tensor


def delta_w_naive(pre: Tensor, post: Tensor, t_pre: Tensor, t_post: Tensor, *, a_plus: float,
                  a_minus: float, sigma: float, gate: Tensor | None = None,
                  clip: float | None = 1.0) -> Tensor:
    """mean_b G_b g(t_post_bj - t_pre_bi)(A+ lambda_bij - A- (1 - lambda_bij)) via [B,C_out,C_in] tensors."""
    lam = post.float().unsqueeze(2) * pre.float().unsqueeze(1)  # [B, C_out, C_in]
    dt = t_post.float().unsqueeze(2) - t_pre.float().unsqueeze(1)  # [B, C_out, C_in]
    g = torch.exp(-(dt ** 2) / (2 * sigma ** 2))  # [B, C_out, C_in]
    P = a_plus * lam * g - a_minus * (1 - lam) * g  # [B, C_out, C_in]
    if gate is not None:
        P = P * gate.float().view(-1, 1, 1)
    dw = P.mean(0)  # [C_out, C_in]
    return dw if clip is None else dw.clamp(-clip, clip)


def latency_cumsum_argmax(spikes: Tensor, silent_value: float | None) -> Tensor:
    """The authors' latency (spikes > 0).cumsum(0).argmax(0); silent units -> silent_value (None: kept)."""
    fired = (spikes > 0).float()  # [T, B, C]
    t = fired.cumsum(0).argmax(0).float()  # [B, C]
    if silent_value is not None:
        t[fired.sum(0) == 0] = silent_value
    return t


def gate_fit_batch(S: Tensor, L: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(k, mu, sd) from all recorded samples at once, as the spec's batch formula."""
    mu = S.mean()
    sd = S.std(unbiased=False) + 1e-8
    Sn = (S - mu) / sd
    Ln = (L - L.mean()) / (L.std(unbiased=False) + 1e-8)
    return -(Sn * Ln).mean(), mu, sd
