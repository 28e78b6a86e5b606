"""Two processes (gloo, CPU) read disjoint shards whose union is the split; equal train batches per rank."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pl_helpers import N_TRAIN, N_VAL, image_cfg


@dataclass
class FakeAccelerator:
    """What build_loader reads from an accelerate.Accelerator."""

    process_index: int
    num_processes: int
    device: torch.device = torch.device("cpu")


def _worker(rank: int, world: int, port: int, paths: dict, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from pipelines import build_loader

    acc = FakeAccelerator(rank, world)
    result = {}
    for backend, path in paths.items():
        for split in ("train", "val"):
            loader = build_loader(image_cfg(backend, path, workers=0, drop_last=False), split, acc, seed=5)
            loader.set_epoch(2)
            idx = loader.indices().tolist()
            labels = torch.cat([y for _, y in loader]).tolist()
            result[(backend, split)] = (idx, labels, len(loader), loader.num_samples)
    gathered = [None] * world
    dist.all_gather_object(gathered, result)
    if rank == 0:
        torch.save(gathered, out)
    dist.destroy_process_group()


def test_two_ranks_disjoint_union(tmp_path, jpeg_tree, converted):
    out = str(tmp_path / "ranks.pt")
    paths = {"dali": str(converted["dali"]), "torchvision": str(jpeg_tree)}
    # fork: the children inherit the imported modules (spawn would re-import torch/timm/DALI: ~30 s here)
    mp.start_processes(_worker, args=(2, 29500 + os.getpid() % 1000, paths, out), nprocs=2, join=True,
                       start_method="fork")
    ranks = torch.load(out, weights_only=False)
    for key in ranks[0]:
        (i0, y0, n0, s0), (i1, y1, n1, s1) = ranks[0][key], ranks[1][key]
        total = N_TRAIN if key[1] == "train" else N_VAL
        assert not set(i0) & set(i1), key  # disjoint
        assert sorted(i0 + i1) == list(range(total)), key  # union = the whole split
        assert n0 == n1 and s0 == s1 == total, key  # equal batches per rank
        assert len(y0) == len(i0) and len(y1) == len(i1)
    # the two backends shard identically (same order function): same labels per rank
    assert ranks[0][("dali", "train")][1] == ranks[0][("torchvision", "train")][1]


@pytest.mark.parametrize("order", ["random", "quasi_random", "sequential"])
def test_epoch_order_shards(order):
    from pipelines.base import epoch_order

    for n in (10, 33, 600):
        for world in (1, 2, 3):
            for drop_last in (True, False):
                shards = [epoch_order(n, seed=1, epoch=4, rank=r, world=world, order=order, train=True,
                                      drop_last=drop_last) for r in range(world)]
                assert len({len(s) for s in shards}) == 1  # equal per rank
                flat = np.concatenate(shards)
                if drop_last:
                    assert len(set(flat.tolist())) == len(flat) == n // world * world  # disjoint
                else:
                    assert set(flat.tolist()) == set(range(n))  # union = split (wrap-around padding)
                again = epoch_order(n, seed=1, epoch=4, rank=0, world=world, order=order, train=True,
                                    drop_last=drop_last)
                assert np.array_equal(again, shards[0])  # a function of (seed, epoch, rank)
    a = epoch_order(600, seed=1, epoch=4, rank=0, world=1, order=order, train=True, drop_last=True)
    b = epoch_order(600, seed=1, epoch=5, rank=0, world=1, order=order, train=True, drop_last=True)
    assert np.array_equal(a, b) == (order == "sequential")


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path, converted):
    """The real launcher: ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2."""
    script = Path(__file__).with_name("accelerate_shards.py")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true"}
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", str(29700 + os.getpid() % 200), str(script), str(converted["dali"]),
           str(tmp_path)]
    subprocess.run(cmd, check=True, env=env, timeout=300)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for split, total in (("train", N_TRAIN), ("val", N_VAL)):
        i0, i1 = r0[split]["indices"], r1[split]["indices"]
        assert not set(i0) & set(i1) and sorted(i0 + i1) == list(range(total))
        assert r0[split]["batches"] == r1[split]["batches"]
