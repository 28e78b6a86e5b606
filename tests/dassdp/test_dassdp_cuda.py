"""Needs CUDA: the hook makes no host sync on the device and matches the CPU result."""
from __future__ import annotations

import pytest
import torch
from dassdp_toy import build, make_batches, train_steps

from dassdp.config import DASSDPConfig
from dassdp.hook import DASSDPHook

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (no GPU on this machine)")


class _NoSyncHook(DASSDPHook):
    """DASSDPHook whose steps and observers raise on any host synchronisation."""

    def after_optimizer_step(self, model, **kw):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return super().after_optimizer_step(model, **kw)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_cuda_hook_has_no_host_sync_and_matches_cpu():
    batches = make_batches(4)
    out = {}
    for device in ("cpu", "cuda"):
        model = build(0).to(device)
        hook = _NoSyncHook(DASSDPConfig(enabled=True, warmup_steps=2))
        hook.setup(model, steps_per_epoch=10)
        for o in hook.observers:  # observers too: no sync while recording
            store = o.record

            def checked(side, x, store=store):
                torch.cuda.set_sync_debug_mode("error")
                try:
                    store(side, x)
                finally:
                    torch.cuda.set_sync_debug_mode("default")

            o.record = checked
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        data = [(x.to(device), y.to(device)) for x, y in batches]
        train_steps(model, opt, hook, data, range(4))
        out[device] = model.classifier.weight.detach().cpu()
    torch.testing.assert_close(out["cuda"], out["cpu"], rtol=1e-5, atol=1e-7)
