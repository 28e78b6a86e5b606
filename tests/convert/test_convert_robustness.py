"""Bad input, atomicity, resume after a kill, determinism, verify catching damage, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from convert_data import make_cifar10, make_jpeg_tree

from tools.convert import ConvertError, convert, verify
from tools.convert.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]


def _checksums(out: Path) -> dict:
    man = json.loads((out / "manifest.json").read_text())
    return {rel: meta["sha256"] for rel, meta in man["files"].items()}


def _final_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and ".work" not in p.parts)


def test_corrupt_jpeg_one_error_nothing_final(tmp_path):
    tree = make_jpeg_tree(tmp_path / "src")
    bad = tree / "train" / "dog" / "dog_1.JPEG"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated JPEG
    garbage = tree / "val" / "cat" / "cat_1.JPEG"
    garbage.write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    with pytest.raises(ConvertError, match=r"(dog_1|cat_1)\.JPEG: corrupt"):
        convert("imagenet", tree, out, "dali", shard_size=2, progress=False)
    assert _final_files(out) == []  # finished shards wait in .work/, nothing under a final name
    man = convert("imagenet", tree, out, "dali", shard_size=2, skip_corrupt=True, progress=False)
    assert [s["file"] for s in man["skipped"]] == [str(bad), str(garbage)]
    assert man["splits"]["train"]["per_class"] == [4, 4] and man["splits"]["val"]["per_class"] == [1, 2]
    assert verify(out)["train"] == 8 and not (out / ".work").exists()
    convert("imagenet", tree, tmp_path / "again", "dali", shard_size=2, skip_corrupt=True, progress=False)
    assert (out / "manifest.json").read_bytes() == (tmp_path / "again" / "manifest.json").read_bytes()


def test_bad_trees_are_named(tmp_path):
    tree = make_jpeg_tree(tmp_path / "a")
    (tree / "val" / "cow").mkdir()
    with pytest.raises(
        ConvertError, match=r"class lists differ \(only in train: \[\], only in val: \['cow'\]"
    ):
        convert("imagenet", tree, tmp_path / "o1", "dali", progress=False)
    (tree / "train" / "cow").mkdir()
    with pytest.raises(ConvertError, match=r"train/cow: empty class folder"):
        convert("imagenet", tree, tmp_path / "o2", "dali", progress=False)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_truncated_pickle_is_named(tmp_path):
    src = make_cifar10(tmp_path / "src")
    f = src / "data_batch_3"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ConvertError, match=r"data_batch_3: unreadable pickle"):
        convert("cifar10", src, tmp_path / "out", "ffcv", progress=False)
    assert not (tmp_path / "out").exists()


def test_deterministic_across_workers_and_shards(tmp_path):
    tree = make_jpeg_tree(tmp_path / "src")
    a = convert("imagenet", tree, tmp_path / "a", "ffcv", write_mode="proportion", workers=1, progress=False)
    b = convert(
        "imagenet",
        tree,
        tmp_path / "b",
        "ffcv",
        write_mode="proportion",
        workers=2,
        shard_size=2,
        progress=False,
    )
    assert a["files"] == b["files"]  # .beton bytes do not depend on workers or chunking
    c = convert("imagenet", tree, tmp_path / "c", "dali", workers=1, shard_size=2, progress=False)
    d = convert("imagenet", tree, tmp_path / "d", "dali", workers=2, shard_size=2, progress=False)
    assert c["files"] == d["files"] and (tmp_path / "c" / "manifest.json").read_bytes() != b""


def test_finished_output_needs_overwrite_and_verify_catches_damage(tmp_path):
    src = make_cifar10(tmp_path / "src")
    out = tmp_path / "out"
    convert("cifar10", src, out, "dali", progress=False)
    with pytest.raises(ConvertError, match="already holds a finished conversion"):
        convert("cifar10", src, out, "dali", progress=False)
    shard = out / "train" / "labels-00000.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(ConvertError, match="labels-00000.npy: checksum differs"):
        verify(out)
    convert("cifar10", src, out, "dali", overwrite=True, progress=False)
    assert verify(out)["train"] == 30


@pytest.mark.parametrize("fmt", ["dali", "ffcv"])
def test_kill_mid_run_then_rerun_is_identical(tmp_path, fmt, capfd):
    tree = make_jpeg_tree(tmp_path / "src", n_train=4, n_val=3)
    ref = convert("imagenet", tree, tmp_path / "ref", fmt, shard_size=2, progress=False)
    out = tmp_path / "out"
    env = dict(os.environ, DASSDP_CONVERT_TEST_DELAY_S="0.4", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable,
        "-m",
        "tools.convert.cli",
        "imagenet",
        str(tree),
        str(out),
        "--format",
        fmt,
        "--shard-size",
        "2",
        "--workers",
        "1",
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while len(list((out / ".work").glob("*/unit-*.json"))) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the tool and its worker processes, mid-run
    proc.wait()
    assert _final_files(out) == [] and not (out / "manifest.json").exists()
    done = list((out / ".work").glob("*/unit-*.json"))
    capfd.readouterr()
    # 11 train + 6 val samples in units of 2; FFCV may also be killed while assembling the .beton files
    assert 2 <= len(done) < 9 or (fmt == "ffcv" and len(done) == 9)
    man = convert("imagenet", tree, out, fmt, shard_size=2, progress=False)
    assert f"resuming: {len(done)} of 9 units already done" in capfd.readouterr().err  # not redone
    assert man["files"] == ref["files"] and _checksums(out) == _checksums(tmp_path / "ref")
    assert (out / "manifest.json").read_bytes() == (tmp_path / "ref" / "manifest.json").read_bytes()
    assert verify(out)["train"] == 11


def test_cli_convert_and_verify(tmp_path, capsys):
    src = make_cifar10(tmp_path / "src")
    out = tmp_path / "out"
    assert cli_main(["cifar10", str(src.parent), str(out), "--format", "dali", "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert cli_main(["verify", str(out), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out) == {"files": 4, "train": 30, "val": 7}
    assert cli_main(["cifar10", str(tmp_path / "nowhere"), str(tmp_path / "o2"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dassdp-convert: error: ") and "nowhere" in err and err.count("\n") == 1
