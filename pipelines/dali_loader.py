"""dali backend: webdataset shards + idx read on the host, DALI decode (ROI) + resize + flip.

CPU: `device_id=None` pipeline; CUDA (needs CUDA): `mixed` decoder, GPU resize. Crop windows and flips
come from (seed, epoch, index) through `external_source`, so batches are resumable mid-epoch.
Tiny-image numpy shards need no decode: they are gathered on the host and resized/flipped on the device.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipelines.base import DataError, Loader
from pipelines.crops import jpeg_size
from pipelines.draws import sample_windows
from pipelines.shards import ArrayShards, TarShards, require_manifest


class DALILoader(Loader):
    """DALI pipeline fed per batch with JPEG bytes, crop windows and flips."""

    def _read_labels(self) -> np.ndarray:
        self.manifest = require_manifest(self.cfg.path, "dali")
        if self.manifest.get("kind") == "frames":
            raise ValueError(f"{self.cfg.path} holds event frames: use data.backend=dvs")
        root = Path(self.cfg.path) / self.split
        self.tars = TarShards(root) if list(root.glob("shard-*.tar")) else None
        meta = ((self.manifest.get("dtypes") or {}).get("image", "uint8"),
                (self.manifest.get("shapes") or {}).get("image"))
        self.arrays = None if self.tars else ArrayShards(root, "images", *meta)
        self._pipe = None
        return (self.tars or self.arrays).labels

    def _build(self):
        from nvidia.dali import fn, pipeline_def, types

        cuda = self.device.type == "cuda"
        h, w = self.recipe.size
        interp = types.INTERP_CUBIC if self.cfg.interpolation == "bicubic" else types.INTERP_LINEAR

        @pipeline_def(batch_size=self.batch_size, num_threads=max(1, self.workers), exec_async=False,
                      exec_pipelined=False, device_id=self.device.index or 0 if cuda else None)
        def pipe():
            jpegs = fn.external_source(name="jpegs", dtype=types.UINT8, ndim=1)
            anchor = fn.external_source(name="anchor", dtype=types.FLOAT, ndim=1)  # (x, y) pixels
            shape = fn.external_source(name="shape", dtype=types.FLOAT, ndim=1)  # (w, h) pixels
            flip = fn.external_source(name="flip", dtype=types.INT32, ndim=0)
            img = fn.decoders.image_slice(jpegs, anchor, shape, axis_names="WH", normalized_anchor=False,
                                          normalized_shape=False, output_type=types.RGB,
                                          device="mixed" if cuda else "cpu")  # [h, w, 3] crop
            if not cuda:  # DALI's CPU resize is ~3x slower than the decode here: OpenCV on the host instead
                return img, flip
            img = fn.resize(img, resize_x=w, resize_y=h, interp_type=interp, antialias=True)  # needs CUDA
            return fn.flip(img, horizontal=flip), flip  # [H, W, 3] uint8

        self._pipe = pipe()
        self._pipe.build()

    def _windows(self, blobs: list[bytes], idx: np.ndarray):
        sizes = []
        for data, i in zip(blobs, idx.tolist()):
            try:
                sizes.append(jpeg_size(data))
            except ValueError as e:
                raise DataError(f"{self.tars.name(i)} (sample {i}): {e}") from e
        win = sample_windows(self.recipe, self.train, np.array(sizes, dtype=np.int64).reshape(-1, 2),
                             self.sample_seeds(idx))  # = the timm draws
        anchors = [np.array([l, t], np.float32) for t, l in win[:, :2].tolist()]
        shapes = [np.array([cw, ch], np.float32) for ch, cw in win[:, 2:4].tolist()]
        flips = [np.array(f, np.int32) for f in win[:, 4].tolist()]
        return anchors, shapes, flips

    def _batches(self, order: np.ndarray) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.arrays is not None:
            yield from self.arrays.batches(self, order)
            return
        if self._pipe is None:
            self._build()
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            blobs = [self.tars.read(i) for i in idx.tolist()]
            anchors, shapes, flips = self._windows(blobs, idx)
            for name, data in (("jpegs", [np.frombuffer(b, np.uint8) for b in blobs]), ("anchor", anchors),
                               ("shape", shapes), ("flip", flips)):
                self._pipe.feed_input(name, data)
            try:
                out, _ = self._pipe.run()
            except RuntimeError as e:
                raise self.tars.explain(idx, blobs, e) from e
            if self.device.type == "cuda":  # needs CUDA: DLPack hand-over of the GPU batch, no host copy;
                # clone + sync: DALI reuses its output buffer on the next run()
                x = torch.from_dlpack(out.as_tensor()).clone()
                torch.cuda.current_stream(self.device).synchronize()
            else:
                x = torch.from_numpy(resize_batch(out, flips, self.recipe.size))
            yield x, torch.from_numpy(self.labels[idx])


def resize_batch(crops, flips, size: tuple[int, int]) -> np.ndarray:
    """Host resize of decoded crops to uint8 [B, H, W, 3]: INTER_AREA when shrinking (antialiased, as PIL's
    bicubic reduce), bicubic when enlarging; then the per-sample flip."""
    import cv2

    out = np.empty((len(crops), size[0], size[1], 3), dtype=np.uint8)
    for k in range(len(crops)):
        img = np.asarray(crops[k])
        shrink = img.shape[0] >= size[0] and img.shape[1] >= size[1]
        mode = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
        cv2.resize(img, (size[1], size[0]), dst=out[k], interpolation=mode)
        if flips[k]:
            out[k] = out[k, :, ::-1]
    return out
