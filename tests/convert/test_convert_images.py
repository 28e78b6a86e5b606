"""Round trips of the image sources through both formats, read back by verify, FFCV and DALI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from convert_data import make_cifar10, make_cifar100, make_fashion, make_jpeg_tree
from PIL import Image

from tools.convert import convert, read_samples, verify
from tools.convert.common import natural_key
from tools.convert.sources import read_idx, scan_cifar10, scan_cifar100
from tools.convert.units import ffcv_encode


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _source_images(tree: Path, split: str) -> list[tuple[np.ndarray, int, Path]]:
    classes = sorted(p.name for p in (tree / split).iterdir())
    out = []
    for label, c in enumerate(classes):
        from tools.convert.common import natural_key

        for f in sorted((tree / split / c).iterdir(), key=lambda p: natural_key(p.name)):
            out.append((np.asarray(Image.open(f).convert("RGB")), label, f))
    return out


@pytest.mark.parametrize("fmt,mode", [("dali", None), ("ffcv", "raw"), ("ffcv", "jpg")])
def test_cifar10_round_trip(tmp_path, fmt, mode):
    src = make_cifar10(tmp_path / "src")
    plan = scan_cifar10(src.parent)
    out = tmp_path / "out"
    man = convert("cifar10", src.parent, out, fmt, write_mode=mode, shard_size=8, progress=False)
    assert man["classes"][:2] == ["airplane", "automobile"] and man["splits"]["train"]["count"] == 30
    assert verify(out) == {"files": len(man["files"]), "train": 30, "val": 7}
    for split in ("train", "val"):
        got = list(read_samples(out, split))
        np.testing.assert_array_equal([lab for _, lab in got], plan.splits[split].labels)
        for (img, _), ref in zip(got, plan.splits[split].images):
            if mode == "jpg":
                assert img.shape == ref.shape  # random noise is JPEG's worst case: only a loose bound
                assert _psnr(img, ref) > 10
            else:
                np.testing.assert_array_equal(img, ref)


def test_cifar10_ffcv_loader_reads_beton(tmp_path):
    """The pipelines' reader (FFCV Loader, CPU) returns the source pixels and labels."""
    from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption

    src = make_cifar10(tmp_path / "src")
    convert("cifar10", src.parent, tmp_path / "out", "ffcv", progress=False)
    plan = scan_cifar10(src.parent)
    loader = Loader(
        str(tmp_path / "out" / "train.beton"),
        batch_size=10,
        num_workers=1,
        order=OrderOption.SEQUENTIAL,
        pipelines={"image": [SimpleRGBImageDecoder()], "label": [IntDecoder()]},
    )
    imgs, labels = zip(*[(np.asarray(x), np.asarray(y)) for x, y in loader])
    np.testing.assert_array_equal(np.concatenate(imgs), plan.splits["train"].images)  # [N, 32, 32, 3]
    np.testing.assert_array_equal(np.concatenate(labels).reshape(-1), plan.splits["train"].labels)


def test_cifar100_coarse_dali(tmp_path):
    src = make_cifar100(tmp_path / "src")
    plan = scan_cifar100(src, "coarse")
    man = convert("cifar100", src, tmp_path / "out", "dali", label_type="coarse", progress=False)
    assert len(man["classes"]) == 20 and man["source"]["label_type"] == "coarse"
    arr = np.load(tmp_path / "out" / "val" / "images-00000.npy")
    lab = np.load(tmp_path / "out" / "val" / "labels-00000.npy")
    assert arr.dtype == np.uint8 and arr.shape == (9, 32, 32, 3) and lab.dtype == np.int64
    np.testing.assert_array_equal(arr, plan.splits["val"].images)
    np.testing.assert_array_equal(lab, plan.splits["val"].labels)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx(tmp_path, gz):
    src = make_fashion(tmp_path / "src", gz=gz)
    man = convert("fashion-mnist", src, tmp_path / "out", "dali", progress=False)
    assert man["shapes"]["image"] == [28, 28, 3] and man["classes"][9] == "Ankle boot"
    ext = ".gz" if gz else ""
    grey, labels = (
        read_idx(src / f"t10k-images-idx3-ubyte{ext}"),
        read_idx(src / f"t10k-labels-idx1-ubyte{ext}"),
    )
    got = list(read_samples(tmp_path / "out", "val"))
    for (img, lab), g, y in zip(got, grey, labels):
        assert lab == y and (img == g[..., None]).all()  # grey replicated to 3 channels


def test_fashion_mnist_real_debian_package(tmp_path):
    real = Path("/usr/share/datasets/fashion-mnist")
    if not real.is_dir():
        pytest.fail(
            "Debian package dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)"
        )
    man = convert("fashion-mnist", real, tmp_path / "out", "dali", progress=False)
    assert man["splits"]["train"]["count"] == 60000 and man["splits"]["val"]["per_class"] == [1000] * 10
    first = next(iter(read_samples(tmp_path / "out", "val")))
    assert first[0].shape == (28, 28, 3) and first[1] == int(read_idx(real / "t10k-labels-idx1-ubyte.gz")[0])


def test_imagenet_dali_tar_round_trip(tmp_path):
    tree = make_jpeg_tree(tmp_path / "src")
    out = tmp_path / "out"
    man = convert("imagenet", tree, out, "dali", shard_size=3, progress=False)
    assert man["classes"] == ["cat", "dog"] and man["splits"]["train"]["per_class"] == [4, 5]
    assert man["shapes"]["image"] == "variable" and verify(out)["train"] == 9
    for split in ("train", "val"):
        got, ref = list(read_samples(out, split)), _source_images(tree, split)
        assert [g[1] for g in got] == [r[1] for r in ref]
        for (img, _), (want, _, f) in zip(got, ref):
            if f.suffix == ".JPEG" or "grey" in f.name:
                np.testing.assert_array_equal(img, want)  # plain JPEG bytes stored unchanged
            else:
                assert img.shape == want.shape and _psnr(img, want) > 30, f  # PNG/CMYK re-encoded as RGB JPEG
    tar = out / "train" / "shard-00000.tar"
    first = sorted((tree / "train" / "cat").iterdir())[0]
    assert first.read_bytes() in tar.read_bytes()


def test_dali_idx_equals_wds2idx(tmp_path):
    tree = make_jpeg_tree(tmp_path / "src")
    convert("imagenet", tree, tmp_path / "out", "dali", shard_size=4, progress=False)
    for tar in sorted((tmp_path / "out").glob("*/shard-*.tar")):
        ref = tmp_path / (tar.stem + tar.parent.name + ".ref.idx")
        subprocess.run(
            [str(Path(sys.executable).parent / "wds2idx"), str(tar), str(ref)],
            check=True,
            capture_output=True,
        )
        assert tar.with_suffix(".idx").read_text() == ref.read_text()


def test_dali_webdataset_reader_on_cpu(tmp_path):
    """DALI's fn.readers.webdataset (device_id=None) reads our shards + index files: pixels and labels."""
    from nvidia.dali import fn, pipeline_def, types

    tree = make_jpeg_tree(tmp_path / "src")
    out = tmp_path / "out"
    convert("imagenet", tree, out, "dali", shard_size=4, progress=False)
    tars = sorted(str(p) for p in (out / "train").glob("*.tar"))

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():
        jpegs, labels = fn.readers.webdataset(
            paths=tars,
            index_paths=[t[:-4] + ".idx" for t in tars],
            ext=["jpg", "cls"],
            dtypes=[types.UINT8, types.INT64],
            missing_component_behavior="error",
            random_shuffle=False,
        )
        return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB), labels

    p = pipe()
    p.build()
    want = list(read_samples(out, "train"))
    for img, lab in want:
        got_img, got_lab = p.run()
        g = np.asarray(got_img.at(0))
        assert int(np.asarray(got_lab.at(0)).reshape(-1)[0]) == lab
        assert g.shape == img.shape and np.abs(g.astype(int) - img).mean() < 1.0  # decoder rounding only


@pytest.mark.parametrize("write_mode", ["smart", "proportion", "jpg"])
def test_imagenet_ffcv_modes(tmp_path, write_mode):
    tree = make_jpeg_tree(tmp_path / "src")
    out = tmp_path / "out"
    man = convert(
        "imagenet",
        tree,
        out,
        "ffcv",
        write_mode=write_mode,
        max_resolution=40,
        smart_threshold=3000,
        compress_probability=0.5,
        progress=False,
    )
    assert man["options"]["write_mode"] == write_mode and verify(out)["val"] == 4
    got, ref = list(read_samples(out, "train")), _source_images(tree, "train")
    assert [g[1] for g in got] == [r[1] for r in ref]
    for (img, _), (want, _, _) in zip(got, ref):
        assert max(img.shape[:2]) == 40
        small = np.asarray(Image.fromarray(want).resize(img.shape[1::-1], Image.BOX))
        assert _psnr(img, small) > 25


def test_ffcv_encode_equals_rgbimagefield(tmp_path):
    """Our pooled encoder stores exactly the bytes RGBImageField.encode would."""
    from ffcv.fields import RGBImageField
    from ffcv.fields.rgb_image import IMAGE_MODES

    img = np.asarray(Image.open(make_jpeg_tree(tmp_path) / "train" / "cat" / "cat_0.JPEG").convert("RGB"))
    for mode in ("raw", "jpg"):
        field = RGBImageField(write_mode=mode, max_resolution=30, jpeg_quality=80)
        meta = np.zeros(1, field.metadata_type)
        store = {}

        def malloc(n, store=store):
            store["buf"] = np.zeros(n, np.uint8)
            return 0, store["buf"]

        field.encode(meta, img, malloc)
        opts = {"max_resolution": 30, "write_mode": mode, "jpeg_quality": 80}
        m, h, w, data = ffcv_encode(img, opts, "train", 0)
        assert (m, h, w) == (IMAGE_MODES[mode], meta["height"][0], meta["width"][0])
        np.testing.assert_array_equal(data, store["buf"])


def test_folder_tree_split_by_fraction(tmp_path):
    tree = make_jpeg_tree(tmp_path / "src") / "train"  # one class-folder tree: cat 4 files, dog 5 files
    man = convert("folder", tree, tmp_path / "out", "dali", val_fraction=0.3, progress=False)
    assert man["splits"]["train"]["per_class"] == [2, 3] and man["splits"]["val"]["per_class"] == [2, 2]
    val = list(read_samples(tmp_path / "out", "val"))
    cat_val = sorted((tree / "cat").iterdir(), key=lambda p: natural_key(p.name))[-2:]
    assert [f.name for f in cat_val] == ["cat_2.JPEG", "extra_png.png"]
    np.testing.assert_array_equal(val[0][0], np.asarray(Image.open(cat_val[0]).convert("RGB")))
