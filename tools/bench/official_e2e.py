"""Runs the official SpikingResformer `main.py` for `dassdp-bench e2e`: `official_e2e.py -- ARGS...`.

Run as a script with cwd = the official checkout and PYTHONPATH=sj014:checkout (set by e2e_shipped.py).
Imports nothing of this repository and changes nothing in the official files. Before it runs main.py
unchanged (runpy, as `python main.py ARGS`) it adapts the process in two ways, both untested against the
real script:
- torchvision's CIFAR md5 check passes: the benchmark's CIFAR-format files are not the release's bytes, and
  main.py asks for `download=True`, which would fetch the release instead;
- without CUDA, `.cuda()` of tensors and modules returns them unchanged and timm's `create_loader` gets
  device='cpu' (main.py calls `.cuda()` unconditionally; its AMP is CUDA-only and turns itself off).
"""
from __future__ import annotations

import functools
import inspect
import os
import runpy
import sys


def adapt() -> None:
    """Make main.py read the benchmark's CIFAR files and, without CUDA, run on the CPU."""
    import torch
    import torchvision.datasets.cifar as tv_cifar

    tv_cifar.check_integrity = lambda *args, **kwargs: True
    if torch.cuda.is_available():
        return
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    import timm.data
    import timm.data.loader

    original = timm.data.loader.create_loader
    if "device" in inspect.signature(original).parameters:
        cpu_loader = functools.partial(original, device=torch.device("cpu"))
        timm.data.create_loader = timm.data.loader.create_loader = cpu_loader


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == here:
        sys.path[0] = os.getcwd()  # the official checkout's `models`, `utils`, not this folder's modules
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    adapt()
    sys.argv = ["main.py", *args]
    runpy.run_path("main.py", run_name="__main__")
