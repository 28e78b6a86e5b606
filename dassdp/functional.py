"""DA-SSDP as pure tensor math, usable with any spiking model (see docs/dassdp.md).

All functions run on the tensors' device and never copy to the host, except `delta_w` when `T` is not
given (it then reads the largest latency once to size its tables).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["synchrony", "latency", "delta_w", "dopamine_gate", "GateEstimator", "latency_kernel"]


def synchrony(pre: Tensor, post: Tensor) -> Tensor:
    """S_b = mean_ij post_bj pre_bi = mean_j post_bj * mean_i pre_bi; pre [B,C_in], post [B,C_out] -> [B]."""
    return post.float().mean(1) * pre.float().mean(1)  # [B]


def latency(spikes: Tensor, mode: str = "last", silent: int | None = None) -> Tensor:
    """Spike latency in steps from a 0/1 sequence [T,B,C] -> [B,C] float; never-spiking units get `silent`
    (None: T).

    mode "last": the last step with a spike (what the authors' `cumsum(0).argmax(0)` returns; that gives a
    never-spiking unit 0, which their W_proj site keeps and their classifier site replaces by T);
    mode "first": the first step with a spike (the paper's words).
    """
    if spikes.dim() < 1 or spikes.shape[0] < 1:
        raise ValueError(f"latency: spikes must be [T, ...] with T >= 1, got shape {tuple(spikes.shape)}")
    T = spikes.shape[0]
    fired = spikes > 0  # [T,B,C] bool
    steps = torch.arange(T, device=spikes.device).view(T, *([1] * (spikes.dim() - 1)))  # [T,1,1]
    quiet = T if silent is None else silent
    if mode == "last":
        t = torch.where(fired, steps, -1).amax(0)  # [B,C], -1 where silent
        t = torch.where(t < 0, quiet, t)
    elif mode == "first":
        t = torch.where(fired, steps, T).amin(0)  # [B,C], T where silent
        t = t if silent is None else torch.where(fired.any(0), t, quiet)
    else:
        raise ValueError(f"latency: mode={mode!r} must be 'last' (authors' code) or 'first' (paper text)")
    return t.to(spikes.dtype if spikes.is_floating_point() else torch.float32)


def dopamine_gate(S: Tensor, k, mu, sd, lo: float = 0.0, hi: float = 2.0) -> Tensor:
    """G_b = clip(1 + k (S_b - mu) / sd, lo, hi) -> [B]; k, mu, sd are floats or 0-d tensors."""
    k, mu, sd = (v.to(S.dtype) if isinstance(v, Tensor) else float(v) for v in (k, mu, sd))  # no H2D copy
    return (1.0 + k * (S - mu) / sd).clamp(lo, hi)  # [B]


def latency_kernel(T: int, *, a_plus: float, a_minus: float, sigma: float,
                   device=None, dtype=torch.float32) -> Tensor:
    """M[p*(T+1)+u, q*(T+1)+v] = g(u - v) * (A+ p q - A- (1 - p q)) for post code (p,u), pre code (q,v)."""
    n = T + 1
    lat = torch.arange(n, dtype=torch.float64, device=device)  # built on the device: no H2D copy, no sync
    g = torch.exp(-(lat[:, None] - lat[None, :]) ** 2 / (2.0 * sigma ** 2))  # [n, n] (post u, pre v)
    fired = torch.arange(2, dtype=torch.float64, device=device)  # [0, 1]
    lam = fired[:, None] * fired[None, :]  # [2, 2] co-firing (post p, pre q)
    amp = a_plus * lam - a_minus * (1.0 - lam)  # [2, 2]
    M = amp[:, None, :, None] * g[None, :, None, :]  # [2, n, 2, n]
    return M.reshape(2 * n, 2 * n).to(dtype)


def _codes(fired: Tensor, t: Tensor, n: int) -> Tensor:
    """Integer code fired * (T+1) + latency in [0, 2(T+1)) -> same shape, int64."""
    return (fired > 0).long() * n + t.long()


def delta_w(pre: Tensor, post: Tensor, t_pre: Tensor, t_post: Tensor, *, a_plus: float, a_minus: float,
            sigma: float, gate: Tensor | None = None, clip: float | None = 1.0,
            T: int | None = None) -> Tensor:
    """dW = clip(mean_b G_b g(t_post_bj - t_pre_bi)(A+ lambda_bij - A- (1 - lambda_bij))) -> [C_out, C_in].

    pre [B,C_in], post [B,C_out] 0/1; t_pre, t_post integer latencies in [0, T] (as `latency` returns).
    Exact and without any [B, C_out, C_in] tensor: each (sample, unit) has one of 2(T+1) codes
    (fired, latency), the summand is a table M[code_post, code_pre], so
    dW = (1/B) * sum_b onehot(code_post_b)^T G_b M onehot(code_pre_b)^T, one [C_out, 2B(T+1)] x
    [2B(T+1), C_in] matmul. `clip=None` returns the unclipped mean (for an all-reduce before clipping).
    """
    B, C_out = post.shape
    C_in = pre.shape[1]
    if pre.shape[0] != B or t_pre.shape != pre.shape or t_post.shape != post.shape:
        raise ValueError(f"delta_w: pre {tuple(pre.shape)}, post {tuple(post.shape)}, t_pre "
                         f"{tuple(t_pre.shape)}, t_post {tuple(t_post.shape)}: need [B,C_in], [B,C_out] "
                         "and latencies of the same shapes")
    if T is None:  # one host read, only on this convenience path
        T = int(torch.maximum(t_pre.max(), t_post.max()).item())
        if not (torch.equal(t_pre, t_pre.round()) and torch.equal(t_post, t_post.round())) or \
                min(t_pre.min().item(), t_post.min().item()) < 0:
            raise ValueError("delta_w: latencies must be integers >= 0 (use dassdp.functional.latency)")
    n = T + 1
    dev = post.device
    with torch.autocast(dev.type, enabled=False):
        M = latency_kernel(T, a_plus=a_plus, a_minus=a_minus, sigma=sigma, device=dev)  # [2n, 2n]
        g = torch.ones(B, device=dev) if gate is None else gate.float()  # [B]
        left = torch.zeros(B, C_out, 2 * n, device=dev)  # [B, C_out, 2n]: G_b at the post code
        left.scatter_(2, _codes(post, t_post, n).unsqueeze(2), g.view(B, 1, 1).expand(B, C_out, 1))
        right = M.t()[_codes(pre, t_pre, n)]  # [B, C_in, 2n]: right[b,i,c] = M[c, code_pre_bi]
        dw = left.permute(1, 0, 2).reshape(C_out, B * 2 * n) @ right.permute(0, 2, 1).reshape(B * 2 * n, C_in)
        dw = dw.div_(B)  # [C_out, C_in]
    return dw if clip is None else dw.clamp_(-clip, clip)


class GateEstimator:
    """Running float64 sums (n, sum S, sum S^2, sum L, sum L^2, sum S*L) on the device; fits (k, mu, sd)."""

    NAMES = ("n", "s", "s2", "l", "l2", "sl")

    def __init__(self, device=None):
        self.sums = torch.zeros(6, dtype=torch.float64, device=device)  # [6]

    @staticmethod
    def batch_sums(S: Tensor, loss) -> Tensor:
        """The six sums of one batch: S [B] synchrony, loss the batch's mean loss (repeated per sample)."""
        S = S.detach().to(torch.float64)  # [B]
        if isinstance(loss, Tensor):
            L = loss.detach().to(torch.float64).expand_as(S)  # [B]
        else:
            L = torch.full_like(S, float(loss))  # a fill, not a host-to-device copy
        n = torch.full((), float(S.numel()), dtype=torch.float64, device=S.device)
        return torch.stack([n, S.sum(), (S * S).sum(), L.sum(), (L * L).sum(), (S * L).sum()])  # [6]

    def update(self, S: Tensor, loss, *, all_reduce: bool = True) -> None:
        """Add one batch; with `all_reduce` (and torch.distributed initialised) the sums of every rank."""
        inc = self.batch_sums(S, loss)
        if all_reduce:
            all_reduce_sum(inc)
        self.sums.add_(inc)

    def add_(self, sums: Tensor) -> None:
        """Add six precomputed (already reduced) sums."""
        self.sums.add_(sums.to(self.sums))

    def fit(self) -> tuple[Tensor, Tensor, Tensor]:
        """(k, mu_S, sd_S) as 0-d float64 tensors; (0, 0, 1) when nothing was recorded (gate = 1)."""
        n, s, s2, l, l2, sl = self.sums.unbind()
        empty = n <= 0
        n = n.clamp(min=1.0)
        mu, ml = s / n, l / n
        sd = (s2 / n - mu * mu).clamp(min=0.0).sqrt() + 1e-8  # population std (+1e-8, as the code)
        sd_l = (l2 / n - ml * ml).clamp(min=0.0).sqrt() + 1e-8
        k = -(sl / n - mu * ml) / (sd * sd_l)  # minus Pearson(S, L)
        zero, one = torch.zeros_like(k), torch.ones_like(k)
        return torch.where(empty, zero, k), torch.where(empty, zero, mu), torch.where(empty, one, sd)

    def state_dict(self) -> dict:
        """The sums (a float64 tensor)."""
        return {"sums": self.sums.clone()}

    def load_state_dict(self, sd: dict) -> None:
        """Restore the sums onto this estimator's device."""
        sums = torch.as_tensor(sd["sums"])
        if sums.shape != (6,):
            raise ValueError(f"GateEstimator.load_state_dict: 'sums' has shape {tuple(sums.shape)}, "
                             "expected (6,)")
        self.sums.copy_(sums.to(self.sums))


def all_reduce_sum(t: Tensor) -> Tensor:
    """In-place SUM over ranks when torch.distributed is initialised; a no-op otherwise."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def world_size() -> int:
    """Number of ranks (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

