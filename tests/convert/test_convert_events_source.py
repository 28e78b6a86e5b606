"""The generic `events` source (real N-MNIST recording, .npy, AEDAT 2.0/4) and the CIFAR10-DVS split order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tonic
from spikingjelly.datasets.utils import integrate_events_by_fixed_frames_number as sj_frames

from tools.convert import ConvertError, convert, read_samples, verify
from tools.convert.cli import main as convert_cli
from tools.convert.recordings import read_aedat2_dvs128, read_recording


def write_aedat2(path, xr, yr, pr, t) -> None:
    """AEDAT 2.0 as the CIFAR10-DVS release and jAER write it: header line, big-endian (address, t) pairs."""
    addr = (np.asarray(yr) << 8) | (np.asarray(xr) << 1) | np.asarray(pr)
    words = np.stack([addr, np.asarray(t)], 1).astype(">u4")
    path.write_bytes(b"#!AER-DAT2.0\r\n# test recording\r\n" + words.tobytes())


def nmnist_events(real_data) -> np.ndarray:
    path = real_data / "events" / "sample_nmnist.bin"
    return tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype)


def nmnist_tree(root, real_data, classes=("five", "one", "zero"), per_class=3) -> dict:
    """Copies of the real N-MNIST file: the first n events (n varies), class k mirrored k times in x."""
    raw = (real_data / "events" / "sample_nmnist.bin").read_bytes()
    recs = np.frombuffer(raw, np.uint8).reshape(-1, 5)  # [n, 5]: x, y, p|t, t, t (no overflow markers here)
    files = {}
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            r = recs[: len(recs) - 400 * i - 37 * k].copy()
            if k % 2:
                r[:, 0] = 33 - r[:, 0]
            (root / c / f"{i}.bin").write_bytes(r.tobytes())
            files[(c, i)] = root / c / f"{i}.bin"
    return files


@pytest.mark.parametrize("split_by", ["number", "time"])
def test_real_nmnist_tree_frames(tmp_path, real_data, split_by):
    files = nmnist_tree(tmp_path / "src", real_data)
    out, T = tmp_path / "out", 4
    man = convert(
        "events",
        tmp_path / "src",
        out,
        "dali",
        T=T,
        sensor_size=(34, 34),
        split_by=split_by,
        train_per_class=2,
        workers=1,
        progress=False,
    )
    assert man["source"]["type"] == "events" and man["source"]["format"] == ".bin"
    assert man["classes"] == ["five", "one", "zero"] and man["shapes"] == {"frames": [T, 2, 34, 34]}
    assert man["frames"]["split_by"] == split_by and man["options"]["split_by"] == split_by
    assert man["splits"]["train"]["per_class"] == [2, 2, 2] and man["splits"]["val"]["per_class"] == [1, 1, 1]
    assert verify(out) == {"files": len(man["files"]), "train": 6, "val": 3}
    for split, idx in (("train", (0, 1)), ("val", (2,))):
        got = list(read_samples(out, split))
        want = [(files[(c, i)], k) for k, c in enumerate(man["classes"]) for i in idx]
        assert [lab for _, lab in got] == [k for _, k in want]
        for (x, _), (f, _) in zip(got, want):
            ev = tonic.io.read_mnist_file(str(f), dtype=tonic.datasets.NMNIST.dtype)
            assert x.shape == (T, 2, 34, 34) and x.dtype == np.uint16
            np.testing.assert_array_equal(x, sj_frames(ev, split_by, T, 34, 34))
            t = ev["t"]
            if split_by == "time":  # T equal windows of the duration, the last one up to the last event
                dt = (t.max() - t.min()) // T
                edges = [t.min() + dt * j for j in range(T)] + [t.max() + 1]
                counts = [((t >= a) & (t < b)).sum() for a, b in zip(edges, edges[1:])]
            else:
                counts = [len(t) // T] * (T - 1) + [len(t) - len(t) // T * (T - 1)]
            assert x.reshape(T, -1).sum(1).tolist() == counts


def test_npy_tree_converts_to_ffcv(tmp_path):
    rng = np.random.default_rng(5)
    dtype = np.dtype([("t", "<i8"), ("x", "<i8"), ("y", "<i8"), ("p", "<i8")])  # tonic's field names
    sums = {}
    for c in ("left", "right"):
        (tmp_path / "src" / c).mkdir(parents=True)
        for i in range(4):
            n = 300 + 50 * i
            ev = np.zeros(n, dtype)
            ev["t"], ev["x"] = np.sort(rng.integers(0, 10**5, n)), rng.integers(0, 20, n)
            ev["y"], ev["p"] = rng.integers(0, 12, n), rng.integers(0, 2, n)
            np.save(tmp_path / "src" / c / f"rec_{i}.npy", ev)
            sums[(c, i)] = n
    with pytest.raises(
        ConvertError, match=r"\.npy recordings do not record the sensor size; pass --sensor-size"
    ):
        convert("events", tmp_path / "src", tmp_path / "out", "ffcv", workers=1, progress=False)
    man = convert(
        "events",
        tmp_path / "src",
        tmp_path / "out",
        "ffcv",
        T=3,
        sensor_size=(20, 12),
        val_fraction=0.25,
        workers=1,
        progress=False,
    )
    assert (tmp_path / "out" / "train.beton").is_file() and man["shapes"] == {"frames": [3, 2, 12, 20]}
    assert man["source"]["val_fraction"] == 0.25 and man["splits"]["val"]["per_class"] == [1, 1]
    got = list(read_samples(tmp_path / "out", "train"))
    assert [int(x.sum()) for x, _ in got] == [sums[(c, i)] for c in ("left", "right") for i in range(3)]


def test_aedat2_and_aedat4_trees_read_the_same(tmp_path, real_data):
    """A DVS128 recording as AEDAT 2.0 and as DV's AEDAT4 gives the same frames; sizes come from the files."""
    import dv_processing as dv

    rng = np.random.default_rng(7)
    for c in ("a", "b"):
        for d in ("a2", "a4"):
            (tmp_path / d / c).mkdir(parents=True)
        for i in range(2):
            n = 500 + i
            xr, yr, pr = rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)
            t = np.sort(rng.integers(0, 10**6, n))
            write_aedat2(tmp_path / "a2" / c / f"{i}.aedat", xr, yr, pr, t)
            store = dv.EventStore()
            for a, x, y, p in zip(t, 127 - xr, 127 - yr, 1 - pr):  # libcaer's DVS128 decoding
                store.push_back(int(a) + 1_600_000_000_000_000, int(x), int(y), bool(p))
            config = dv.io.MonoCameraWriter.EventOnlyConfig("DVS128", (128, 128))
            writer = dv.io.MonoCameraWriter(str(tmp_path / "a4" / c / f"{i}.aedat4"), config)
            writer.writeEvents(store)
            del writer
    mans = {
        d: convert(
            "events",
            tmp_path / d,
            tmp_path / f"out_{d}",
            "dali",
            T=5,
            train_per_class=1,
            workers=1,
            progress=False,
        )
        for d in ("a2", "a4")
    }
    for man in mans.values():
        assert man["source"]["sensor_size"] == [128, 128] and man["source"]["sensor_size_from"] == "files"
    for split in ("train", "val"):
        for (x2, l2), (x4, l4) in zip(
            read_samples(tmp_path / "out_a2", split), read_samples(tmp_path / "out_a4", split)
        ):
            assert l2 == l4
            np.testing.assert_array_equal(x2, x4)
    # the generic AEDAT 2.0 reading is the transpose of spikingjelly's CIFAR10-DVS reading
    from tools.convert import read_aedat2

    f = tmp_path / "a2" / "a" / "0.aedat"
    ours, sj = read_aedat2_dvs128(f), read_aedat2(f)
    assert (ours["x"] == sj["y"]).all() and (ours["y"] == sj["x"]).all() and (ours["p"] == sj["p"]).all()
    # the real 320x240 recording: the size comes from its AEDAT4 header; mixed sizes are refused
    real = (real_data / "events" / "sample.aedat4").read_bytes()
    (tmp_path / "a4" / "a" / "real.aedat4").write_bytes(real)
    with pytest.raises(ConvertError, match=r"sensor but .* has 320x240; pass --sensor-size"):
        convert("events", tmp_path / "a4", tmp_path / "mixed", "dali", workers=1, progress=False)


def test_real_aedat4_size_from_header(tmp_path, real_data):
    for c in ("x", "y"):
        (tmp_path / "src" / c).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "src" / c / f"{i}.aedat4").write_bytes(
                (real_data / "events" / "sample.aedat4").read_bytes()
            )
    man = convert(
        "events",
        tmp_path / "src",
        tmp_path / "out",
        "dali",
        T=2,
        split_by="time",
        train_per_class=1,
        workers=1,
        progress=False,
    )
    assert man["shapes"] == {"frames": [2, 2, 240, 320]} and man["source"]["sensor_size"] == [320, 240]
    ev = read_recording(str(tmp_path / "src" / "x" / "0.aedat4"))
    x, _ = next(iter(read_samples(tmp_path / "out", "train")))
    assert int(x.sum()) == len(ev["t"]) == 111_954


@pytest.mark.parametrize(
    "name,cut,problem", [("3.bin", 3, "truncated N-MNIST file"), ("3.npy", None, "unreadable .npy")]
)
def test_corrupt_recording_is_one_line_naming_it(tmp_path, real_data, capsys, name, cut, problem):
    nmnist_tree(tmp_path / "src", real_data, classes=("a", "b"), per_class=3)
    bad = tmp_path / "src" / "b" / name
    if cut is not None:
        bad.write_bytes((tmp_path / "src" / "b" / "0.bin").read_bytes()[:-cut])
    else:
        bad.write_bytes(b"\x93NUMPY garbage")
        for f in (tmp_path / "src").rglob("*.bin"):  # one format per tree: make it an .npy tree
            ev = nmnist_events(real_data)
            np.save(f.with_suffix(".npy"), ev)
            f.unlink()
    rc = convert_cli(
        [
            "events",
            str(tmp_path / "src"),
            str(tmp_path / "out"),
            "--sensor-size",
            "34x34",
            "--format",
            "dali",
            "--quiet",
            "--workers",
            "1",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(bad) in err[0] and problem in err[0], err


def test_mixed_formats_are_refused(tmp_path, real_data):
    nmnist_tree(tmp_path / "src", real_data, classes=("a", "b"), per_class=2)
    np.save(tmp_path / "src" / "a" / "2.npy", nmnist_events(real_data))
    with pytest.raises(ConvertError, match=r"several formats \['\.bin', '\.npy'\]"):
        convert("events", tmp_path / "src", tmp_path / "out", "dali", sensor_size=(34, 34), progress=False)


@pytest.mark.parametrize("extra,val", [([], ["7", "8", "9"]), (["--order", "natural"], ["9", "10", "11"])])
def test_cifar10dvs_official_split_by_default(tmp_path, extra, val):
    """12 recordings per class named 0..11, 9 for train: lexical order (0,1,10,11,2,..,9) ends in 7, 8, 9."""
    rng = np.random.default_rng(0)
    for c in ("airplane", "cat"):
        (tmp_path / "src" / c).mkdir(parents=True)
        for i in range(12):
            n = 20 + i  # the event count names the recording in the output
            write_aedat2(
                tmp_path / "src" / c / f"{i}.aedat",
                rng.integers(0, 128, n),
                rng.integers(0, 128, n),
                rng.integers(0, 2, n),
                np.arange(n),
            )
    out = tmp_path / "out"
    rc = convert_cli(
        [
            "cifar10dvs",
            str(tmp_path / "src"),
            str(out),
            "--format",
            "dali",
            "--T",
            "2",
            "--train-per-class",
            "9",
            "--quiet",
            "--workers",
            "1",
            *extra,
        ]
    )
    assert rc == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["source"]["order"] == (extra[1] if extra else "lexical")
    names = [str(int(x.sum()) - 20) for x, _ in read_samples(out, "val")]
    assert names == val + val


def test_presplit_tree_and_default_fraction(tmp_path, real_data):
    nmnist_tree(tmp_path / "split" / "train", real_data, classes=("a", "b"), per_class=2)
    nmnist_tree(tmp_path / "split" / "val", real_data, classes=("a", "b"), per_class=1)
    man = convert("events", tmp_path / "split", tmp_path / "out", "dali", sensor_size=(34, 34), workers=1,
                  progress=False)
    assert man["source"]["split"] == "folders" and man["splits"]["val"]["per_class"] == [1, 1]
    assert man["splits"]["train"]["per_class"] == [2, 2]
    with pytest.raises(ConvertError, match="holds train/ and val/ already"):
        convert("events", tmp_path / "split", tmp_path / "o2", sensor_size=(34, 34), train_per_class=1)
    nmnist_tree(tmp_path / "flat", real_data, classes=("a", "b"), per_class=11)
    man = convert("events", tmp_path / "flat", tmp_path / "o3", "dali", sensor_size=(34, 34), workers=1,
                  progress=False)
    assert man["source"]["val_fraction"] == 0.1 and man["splits"]["val"]["per_class"] == [2, 2]  # ceil(1.1)
