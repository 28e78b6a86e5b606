"""dvs backend on both frame layouts; bad data gives one clear error naming the sample, never a hang."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from pl_fixtures import write_dali_arrays, write_ffcv_frames
from pl_helpers import cached_loader, image_cfg

from pipelines import DataConfig, DataError, build_loader

T, N_TR, N_VA = 4, 20, 10


@pytest.fixture(scope="module")
def frames(data_root):
    rng = np.random.default_rng(0)
    data = {s: (rng.poisson(0.4, (n, T, 2, 32, 32)).astype(np.uint16), rng.integers(0, 10, n))
            for s, n in (("train", N_TR), ("val", N_VA))}
    classes = [str(k) for k in range(10)]
    npy = write_dali_arrays(data_root / "frames_npy", "frames", data, classes, per_shard=8)
    ffcv = write_ffcv_frames(data_root / "frames_ffcv", data, classes)
    return data, {"npy": npy, "ffcv": ffcv}


def _cfg(path, **kw):
    return DataConfig(dataset="cifar10dvs", backend="dvs", path=str(path), batch_size=4, workers=1,
                      input_size=[3, 16, 16], **kw)


@pytest.mark.parametrize("layout", ["npy", "ffcv"])
def test_frames_contract(frames, layout):
    data, paths = frames
    val = cached_loader(_cfg(paths[layout]), "val", T=T)
    xs, ys = zip(*list(val))
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (N_VA, T, 3, 16, 16) and x.dtype == torch.float32
    assert y.tolist() == data["val"][1].tolist()
    assert torch.allclose(x[:, :, 2], x[:, :, 0] + x[:, :, 1])  # third channel = pos + neg
    ref = torch.nn.functional.interpolate(torch.tensor(data["val"][0]).float().flatten(0, 1), size=(16, 16),
                                          mode="bilinear", antialias=True).view(N_VA, T, 2, 16, 16)
    assert torch.allclose(x[:, :, :2], ref, atol=1e-4)  # no normalisation, resize only
    train = cached_loader(_cfg(paths[layout], augment="augment"), "train", T=T)
    full = list(train)
    train.set_epoch(0, start_batch=2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[2:], list(train)))
    assert sorted(torch.cat([b[1] for b in full]).tolist()) == sorted(data["train"][1].tolist())


def test_frames_wrong_T_is_refused(frames):
    with pytest.raises(ValueError, match="T=4 .*T=8"):
        build_loader(_cfg(frames[1]["npy"]), "val", T=8)


def test_unfinished_conversion_is_refused(data_root, converted):
    part = data_root / "unfinished"
    shutil.copytree(converted["dali"], part, dirs_exist_ok=True)
    (part / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        build_loader(image_cfg("dali", part), "val")


def _corrupt(path, data_offset, size):
    raw = bytearray(path.read_bytes())
    raw[data_offset + 2: data_offset + size] = b"\x00" * (size - 2)  # keep SOI, destroy the rest
    path.write_bytes(bytes(raw))


def test_dali_bad_jpeg_names_the_sample(data_root, converted):
    bad = data_root / "bad_dali"
    shutil.copytree(converted["dali"], bad, dirs_exist_ok=True)
    loader = build_loader(image_cfg("dali", bad), "val")
    i = 5
    tar = loader.tars.tars[loader.tars.shard[i]]
    _corrupt(tar, int(loader.tars.off[i]), int(loader.tars.size[i]))
    loader = build_loader(image_cfg("dali", bad), "val")
    with pytest.raises(DataError, match=rf"sample {i}\)"):
        list(loader)


def test_torchvision_bad_file_names_it_no_hang(data_root, jpeg_tree):
    bad = data_root / "bad_src"
    shutil.copytree(jpeg_tree, bad, dirs_exist_ok=True)
    victim = sorted((bad / "val" / "c1").iterdir())[0]
    victim.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(Exception, match=victim.name):  # DataLoader re-raises the worker's DataError
        list(build_loader(image_cfg("torchvision", bad), "val"))


def test_ffcv_bad_jpeg_names_the_sample(data_root, converted):
    from ffcv.reader import Reader

    bad = data_root / "bad_ffcv"
    shutil.copytree(converted["ffcv"], bad, dirs_exist_ok=True)
    beton = bad / "val.beton"
    r = Reader(str(beton))
    meta = r.metadata["f0"]
    i = int(np.nonzero(meta["mode"] == 0)[0][3])  # a JPEG-stored sample
    ptr = int(meta["data_ptr"][i])
    _corrupt(beton, ptr, 4000)
    with pytest.raises(DataError, match=rf"sample {i} failed to decode"):
        list(build_loader(image_cfg("ffcv", bad), "val"))


def test_ffcv_left_mid_epoch_stops_its_thread(converted):
    """A loader left after one batch (a step cap, eval_batches) stops and joins ffcv's decoding thread
    before its file is unmapped: no thread is left to die inside numba at exit."""
    import threading

    from ffcv.loader.epoch_iterator import EpochIterator

    it = iter(build_loader(image_cfg("ffcv", converted["ffcv"], batch_size=2), "train"))
    x, _ = next(it)
    assert x.shape[0] == 2
    assert any(isinstance(t, EpochIterator) for t in threading.enumerate())  # it did start one
    it.close()
    alive = [t for t in threading.enumerate() if isinstance(t, EpochIterator)]
    assert alive == []
