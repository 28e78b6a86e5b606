"""Run under `accelerate launch --num_processes 2`: each rank writes the sample indices/labels it read."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from accelerate import Accelerator  # noqa: E402

from pipelines import DataConfig, build_loader  # noqa: E402


def main(path: str, out: str) -> None:
    acc = Accelerator()
    cfg = DataConfig(dataset="folder", backend="dali", path=path, batch_size=4, workers=1, num_classes=3)
    result = {}
    for split in ("train", "val"):
        loader = build_loader(cfg, split, acc, seed=1)
        labels = [int(v) for _, y in loader for v in y]
        result[split] = {"indices": loader.indices().tolist(), "labels": labels, "batches": len(loader)}
    Path(out, f"rank{acc.process_index}.json").write_text(json.dumps(result))
    acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
