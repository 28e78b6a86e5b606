"""The DA-SSDP training hook: gate statistics during warm-up, then the gated dW after each real step.

It has the methods of `launch.hooks.TrainingHook` (a structural protocol: nothing to inherit).
"""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dassdp.config import DASSDPConfig
from dassdp.functional import GateEstimator, all_reduce_sum, delta_w, dopamine_gate, synchrony, world_size
from dassdp.sites import SiteObserver, resolve_sites

STATE_VERSION = 1


class DASSDPHook:
    """DA-SSDP (docs/dassdp.md): record gate statistics during warm-up, then add the gated dW in place.

    `step` is the global optimizer-step index (0-based); warm-up lasts while `step < warmup_steps` when
    that is set, else while `epoch < warmup_epochs`. The gate is fitted once, at the first step after
    warm-up, from float64 sums that are all-reduced every step, so every rank fits the same gate; dW is
    all-reduced (mean over ranks) before clipping and adding, so every rank applies the same update.
    """

    def __init__(self, cfg: DASSDPConfig):
        cfg.check()
        self.cfg = cfg
        self.observers: list[SiteObserver] = []
        self.gates = {name: GateEstimator() for name in cfg.sites}  # warm-up sums per site
        self.fitted = False
        self.gate_params: dict[str, Tensor] = {}  # site -> [3] float64 (k, mu, sd)
        self.applied_steps = 0

    # ------------------------------------------------------------------ interface
    def setup(self, model: nn.Module, *, steps_per_epoch: int) -> None:
        """Resolve the sites and attach observers (`steps_per_epoch` unused: warm-up is in steps/epochs)."""
        self.close()
        self.observers = [SiteObserver(spec, model, self.cfg.latency, self.cfg.block_silent)
                          for spec in resolve_sites(model, self.cfg.sites)]
        self._to(self.observers[0].weight.device)

    def in_warmup(self, epoch: int, step: int) -> bool:
        """True while the rule only records gate statistics."""
        if self.cfg.warmup_steps is not None:
            return step < self.cfg.warmup_steps
        return epoch < self.cfg.warmup_epochs

    @torch.no_grad()
    def after_optimizer_step(self, model: nn.Module, *, loss: Tensor, epoch: int, step: int) -> dict:
        """Warm-up: add this step's (S, loss) sums; after: fit the gate once, then W += all-reduced dW."""
        if not self.observers or not all(o.ready for o in self.observers):
            return {}  # disabled, or no training forward since the last call
        pre_post = {o.spec.name: (o.bufs["pre"], o.bufs["post"]) for o in self.observers}
        S = {name: synchrony(pre, post) for name, (pre, post) in pre_post.items()}  # [B] per site
        metrics: dict[str, Tensor | float] = {}
        for name, s in S.items():
            metrics[f"{name}/sync"] = s.mean()
            pre, post = pre_post[name]
            # fraction of synapses whose pre and post fired together in at least one sample
            metrics[f"{name}/cofire"] = ((post.t() @ pre) > 0).float().mean()
        if self.in_warmup(epoch, step):
            self._record(S, loss)
        else:
            metrics.update(self._apply(S, step))
        for o in self.observers:
            o.consume()
        return metrics

    def state_dict(self) -> dict:
        """Gate sums, fitted gate, counters (tensors on their device)."""
        return {"version": STATE_VERSION, "sites": list(self.cfg.sites),
                "gate_sums": {n: g.sums.clone() for n, g in self.gates.items()},
                "fitted": self.fitted, "gate": {n: p.clone() for n, p in self.gate_params.items()},
                "applied_steps": self.applied_steps}

    def load_state_dict(self, sd: dict) -> None:
        """Restore state saved by `state_dict` (the site list must match dassdp.sites)."""
        if sd.get("version") != STATE_VERSION:
            raise ValueError(f"dassdp hook state has version {sd.get('version')!r}, expected {STATE_VERSION}")
        if list(sd["sites"]) != list(self.cfg.sites):
            raise ValueError(f"dassdp hook state was saved for sites {sd['sites']}, but dassdp.sites is "
                             f"{self.cfg.sites}; resume with the same sites")
        for n, g in self.gates.items():
            g.load_state_dict({"sums": sd["gate_sums"][n]})
        self.fitted = bool(sd["fitted"])
        dev = next(iter(self.gates.values())).sums.device
        self.gate_params = {n: torch.as_tensor(p).to(dev, torch.float64).clone()
                            for n, p in sd["gate"].items()}
        self.applied_steps = int(sd["applied_steps"])

    def close(self) -> None:
        """Remove the observers' forward hooks."""
        for o in self.observers:
            o.remove()
        self.observers = []

    # ------------------------------------------------------------------ internals
    def _to(self, device) -> None:
        for g in self.gates.values():
            g.sums = g.sums.to(device)
        self.gate_params = {n: p.to(device) for n, p in self.gate_params.items()}

    def _record(self, S: dict[str, Tensor], loss: Tensor) -> None:
        """One all-reduce of every site's six sums, added to the estimators."""
        inc = torch.stack([GateEstimator.batch_sums(s, loss) for s in S.values()])  # [sites, 6]
        all_reduce_sum(inc)
        for name, row in zip(S, inc):
            self.gates[name].add_(row)

    def _fit(self, step: int) -> None:
        self.gate_params = {n: torch.stack(g.fit()) for n, g in self.gates.items()}  # [3] (k, mu, sd)
        self.fitted = True
        if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:  # one gate, one line
            print(self.fitted_line(step), file=sys.stderr, flush=True)

    def fitted_line(self, step: int) -> str:
        """One log line: step, samples recorded, per site k and corr(S, loss) (k = -corr, GateEstimator)."""
        n = int(next(iter(self.gates.values())).sums[0].item()) if self.gates else 0
        sites = "; ".join(f"{name} k={float(p[0]):+.4f} corr(S, loss)={-float(p[0]):+.4f}"
                          for name, p in self.gate_params.items())
        return f"dassdp: gate fitted at step {step} from {n} samples: {sites}"

    def _apply(self, S: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        """Compute each site's local dW, all-reduce them in one buffer, clip and add in place."""
        if not self.fitted:
            self._fit(step)
        cfg, metrics, parts = self.cfg, {}, []
        for o in self.observers:
            name = o.spec.name
            k, mu, sd = self.gate_params[name].unbind()
            G = dopamine_gate(S[name], k, mu, sd, *cfg.gate_clip)  # [B]
            b = o.bufs
            o.check_shapes()
            dw = delta_w(b["pre"], b["post"], b["t_pre"], b["t_post"], a_plus=cfg.a_plus, a_minus=cfg.a_minus,
                         sigma=cfg.sigma, gate=G, clip=None, T=o.T)  # [C_out, C_in], local mean
            parts.append(dw)
            metrics[f"{name}/gate_k"] = k.float()
            metrics[f"{name}/gate_mean"] = G.mean()
        world = world_size()
        if world > 1:
            flat = all_reduce_sum(torch.cat([p.flatten() for p in parts])).div_(world)  # mean over ranks
            parts = list(flat.split([p.numel() for p in parts]))
        for o, dw in zip(self.observers, parts):
            dw = dw.clamp_(-cfg.dw_clip, cfg.dw_clip)
            o.weight.add_(dw.view(o.weight.shape).to(o.weight.dtype))
            metrics[f"{o.spec.name}/dw_abs"] = dw.abs().mean()
        self.applied_steps += 1
        return metrics
