"""Runs the official SpikingResformer `main.py` for `dassdp-bench e2e`: `official_e2e.py -- ARGS...`.

Run as a script with cwd = the official checkout and PYTHONPATH=sj014:checkout (set by e2e_shipped.py).
Imports nothing of this repository and changes nothing in the official files. Before it runs main.py
unchanged (runpy, as `python main.py ARGS`) it adapts the process in two ways (run against the official
checkout at commit 3f75127 on a CPU):
- torchvision's CIFAR md5 check passes: the benchmark's CIFAR-format files are not the release's bytes, and
  main.py asks for `download=True`, which would fetch the release instead;
- without CUDA, `.cuda()` of tensors and modules and `torch.tensor(..., device='cuda')` stay on the CPU,
  timm's `create_loader` gets device='cpu' (main.py calls `.cuda()` unconditionally; its AMP is CUDA-only and
  turns itself off), and the neurons, which the official layers build with spikingjelly's CuPy backend, run
  on its torch backend.
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
    torch_backend()
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    tensor = torch.tensor

    def tensor_off_cuda(*args, device=None, **kwargs):  # utils.Record makes its counters on 'cuda'
        on_cuda = device is not None and torch.device(device).type == "cuda"
        return tensor(*args, device=None if on_cuda else device, **kwargs)
    torch.tensor = tensor_off_cuda
    import timm.data
    import timm.data.loader

    original = timm.data.loader.create_loader
    if "device" in inspect.signature(original).parameters:
        cpu_loader = functools.partial(original, device=torch.device("cpu"))
        timm.data.create_loader = timm.data.loader.create_loader = cpu_loader


def torch_backend() -> None:
    """The official layers ask spikingjelly for its 'cupy' backend: let them be built without CuPy, then
    switch every neuron of the model main.py creates to the 'torch' backend (as the issue's runs did)."""
    import timm.models
    from spikingjelly.activation_based import base

    base.check_backend_library = lambda backend: None
    create = timm.models.create_model

    def create_on_torch_backend(*args, **kwargs):
        model = create(*args, **kwargs)
        for m in model.modules():
            if "torch" in getattr(m, "supported_backends", ()):
                m.backend = "torch"
        return model
    timm.models.create_model = create_on_torch_backend


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
