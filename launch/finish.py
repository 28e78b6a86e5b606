"""The end of a training run: buffers synced, ranks compared, summary.json written."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from launch.checkpoint import export_safetensors, plain_state_dict
from launch.metrics import to_float
from launch.progress import TrainProgress


def sync_buffers(model: torch.nn.Module, acc) -> None:
    """Broadcast rank 0's buffers (BN statistics, firing-rate EMAs) to every rank."""
    if acc.num_processes > 1:
        for b in model.buffers():
            torch.distributed.broadcast(b, 0)


def weights_digest(sd: dict[str, torch.Tensor]) -> str:
    """sha256 over the names and raw bytes of a (plain, CPU) state dict."""
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].reshape(-1).view(torch.uint8).numpy().tobytes() if sd[k].numel() else b"")
    return h.hexdigest()


def ranks_consistent(sd: dict[str, torch.Tensor], acc) -> bool:
    """True when every rank holds the same weights (a warning on stderr otherwise); collective."""
    from accelerate.utils import gather_object

    digests = gather_object([weights_digest(sd)])
    if len(set(digests)) != 1:
        print(f"dassdp-train: WARNING: ranks ended with different weights {digests}", file=sys.stderr)
    return len(set(digests)) == 1


def finish(model: torch.nn.Module, acc, progress: TrainProgress, *, output_dir: str, wall_s: float,
           last_epoch: dict, rank_weights: bool, compare_ranks: bool, precision: dict | None = None) -> None:
    """Sync buffers, compare ranks, optional per-rank weights (`train.save_rank_weights`), summary.json
    (with `precision`: the training and evaluation dtypes the figures were made with)."""
    sync_buffers(model, acc)
    sd = plain_state_dict(model.state_dict())
    if rank_weights:
        export_safetensors(sd, Path(output_dir) / f"final_rank{acc.process_index}.safetensors")
    consistent = ranks_consistent(sd, acc) if compare_ranks and acc.num_processes > 1 else None
    if not acc.is_main_process:
        return
    p = progress
    summary = {"epochs": p.epoch, "steps": p.step, "best_acc1": p.best_acc1, "wall_s": wall_s,
               "ranks_consistent": consistent, "skipped_overflow": p.skipped_overflow,
               "skipped_nonfinite": p.skipped_nonfinite, "samples": p.samples, "precision": precision,
               **{k: to_float(v) for k, v in last_epoch.items()}}
    (Path(output_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"done: {p.step} steps, best top1 {p.best_acc1:.4f}, ranks consistent: {consistent}, "
          f"run folder {output_dir}", file=sys.stderr)
