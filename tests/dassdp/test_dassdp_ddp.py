"""Two gloo processes with DDP and the hook: both ranks' weights stay bit-identical."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from dassdp_toy import build, make_batches
from spikingjelly.activation_based import functional as sj_functional
from torch.nn.parallel import DistributedDataParallel as DDP

from dassdp.config import DASSDPConfig
from dassdp.functional import delta_w
from dassdp.hook import DASSDPHook

STEPS, WARMUP = 4, 2


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = build(0)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    ddp = DDP(model)
    hook = DASSDPHook(DASSDPConfig(enabled=True, warmup_steps=WARMUP))
    hook.setup(model, steps_per_epoch=STEPS)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
    for step, (x, y) in enumerate(make_batches(STEPS, seed=100 + rank)):  # each rank its own data
        loss = F.cross_entropy(ddp(x).mean(0), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            hook.after_optimizer_step(model, loss=loss.detach(), epoch=0, step=step)
        sj_functional.reset_net(model)
    b = hook.observers[0].bufs  # this rank's last statistics: its own, un-reduced dW differs per rank
    local = delta_w(b["pre"], b["post"], b["t_pre"], b["t_post"], a_plus=1.5e-3, a_minus=5e-4, sigma=1.0)
    torch.save({"params": model.state_dict(), "init": init, "local_dw": local, "gate": hook.gate_params,
                "sums": {n: g.sums for n, g in hook.gates.items()}}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_ranks_stay_bit_identical(tmp_path):
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    for n in r0["gate"]:
        assert torch.equal(r0["gate"][n], r1["gate"][n]) and torch.equal(r0["sums"][n], r1["sums"][n])
    assert float(r0["sums"]["classifier"][0]) == 2 * WARMUP * 6  # samples of both ranks in the gate sums
    assert not torch.equal(r0["local_dw"], r1["local_dw"])  # without the all-reduce the ranks would drift
    assert not torch.equal(r0["params"]["classifier.weight"], r0["init"]["classifier.weight"])
