"""SpikingResformer (Shi, Hao, Yu; CVPR 2024): the network, its variants and their timm registration.

Input: static images [B, C, H, W] (direct encoding: the same image at every step; the stem runs once and
is broadcast over T) or event frames [B, T, C, H, W]. Output: per-step logits [T, B, K]; the trainer takes
`.mean(0)`. State-dict names equal the official implementation's.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.models import register_model

from models import cbuild, spike_conv
from models.layers import BN, DSSA, GWFFN, Conv2d, DownsampleLayer
from models.neurons import NEURONS


@dataclass(frozen=True)
class Arch:
    """One variant: stage widths, heads, patch sizes, blocks per stage, stem kind, neuron, group size."""

    planes: tuple[int, ...]
    heads: tuple[int, ...]
    patches: tuple[int, ...] = (4, 2, 1)
    blocks: tuple[int, ...] = (1, 2, 3)  # DSSA+GWFFN pairs per stage
    stem: str = "imagenet"  # "imagenet": conv7x7/2 + BN + maxpool3/2; "small": conv3x3/1 + BN
    neuron: str = "lif"
    group_size: int = 64
    img_size: int = 224
    num_classes: int = 1000


ARCHS: dict[str, Arch] = {
    "spikingresformer_ti": Arch((64, 192, 384), (1, 3, 6)),
    "spikingresformer_s": Arch((64, 256, 512), (1, 4, 8)),
    "spikingresformer_m": Arch((64, 384, 768), (1, 6, 12)),
    "spikingresformer_l": Arch((128, 512, 1024), (2, 8, 16)),
    "spikingresformer_cifar": Arch((64, 192, 384), (1, 3, 6), stem="small", img_size=32, num_classes=10),
    "spikingresformer_dvsg": Arch((32, 96, 192), (1, 3, 6), stem="small", neuron="plif", group_size=32,
                                  img_size=64, num_classes=11),
    # `make demo` (Fashion-MNIST at 32 px on a CPU): ImageNet stem (32 -> 8 px), 32/64/128 channels, the
    # paper's group width 64 (groups of 16 train about 1 point lower in the same time: docs/benchmarks.md)
    "spikingresformer_demo": Arch((32, 64, 128), (1, 2, 4), blocks=(1, 1, 1), img_size=32, num_classes=10),
    # tests only: 16/32/64 channels, one block per stage, works at 16-32 px
    "spikingresformer_tiny": Arch((16, 32, 64), (1, 1, 2), blocks=(1, 1, 1), stem="small", group_size=16,
                                  img_size=32, num_classes=10),
}


def _stem(arch: Arch, in_channels: int) -> nn.Sequential:
    c = arch.planes[0]
    if arch.stem == "imagenet":
        return nn.Sequential(Conv2d(in_channels, c, 7, stride=2, padding=3), BN(c),
                             nn.MaxPool2d(3, stride=2, padding=1))
    return nn.Sequential(Conv2d(in_channels, c, 3, stride=1, padding=1), BN(c))


class SpikingResformer(nn.Module):
    """The network; `T` time steps, built for one input resolution `img_size` (DSSA's N' is fixed)."""

    def __init__(self, arch: Arch, T: int = 4, num_classes: int | None = None, img_size: int | None = None,
                 in_channels: int = 3, frozen_ema: bool = False, sparse_conv: bool | str = False):
        super().__init__()
        self.T = T
        self.arch = arch
        img_size = img_size or arch.img_size
        num_classes = num_classes or arch.num_classes
        neuron = NEURONS[arch.neuron]
        self.skip = ["prologue.0", "classifier"]  # layers left out of SOP counting (as the original)
        self.prologue = _stem(arch, in_channels)
        size = img_size // 4 if arch.stem == "imagenet" else img_size
        self.layers = nn.Sequential()
        for i, (dim, h, p, n) in enumerate(zip(arch.planes, arch.heads, arch.patches, arch.blocks)):
            stage = nn.Sequential()
            if i > 0:
                stage.append(DownsampleLayer(arch.planes[i - 1], dim, neuron=neuron))
                size //= 2
            if size % p:
                raise ValueError(f"img_size {img_size} gives a {size}px map in stage {i + 1}, not divisible "
                                 f"by its patch size {p}: use a multiple of {img_size // size * p}")
            for _ in range(n):
                stage.append(DSSA(dim, h, (size // p) ** 2, p, neuron=neuron, frozen_ema=frozen_ema))
                stage.append(GWFFN(dim, group_size=arch.group_size, neuron=neuron))
            self.layers.append(stage)
        self.classifier = nn.Linear(arch.planes[-1], num_classes, bias=False)
        self.init_weight()
        self.set_sparse_conv(sparse_conv)
        self.set_carry_state(False)

    def set_carry_state(self, on: bool) -> None:
        """Off (the default): every forward call is one whole T-step sequence and starts at rest, as the paper
        trains and evaluates (spikingjelly's `reset_net` between batches is then harmless but not needed),
        and the final membranes are neither kept nor given gradients. On: spikingjelly's stateful neurons,
        whose membranes carry over to the next call until `reset_net` (a long sequence fed in chunks)."""
        for m in self.modules():
            if isinstance(m, tuple(NEURONS.values())):
                m.carry_state = on

    def set_sparse_conv(self, on: bool | str, limits: dict[torch.dtype, float] | None = None,
                        min_group_out: int = spike_conv.MIN_GROUP_OUT) -> None:
        """Event-driven CPU convolutions (models/spike_conv.py), chosen per layer: the convolutions that read
        spikes (all but the stem's) with at least `min_group_out` output channels per group, for a batch
        whose input has at most `limits[dtype]` nonzero (default `spike_conv.DENSITY_LIMITS`); the others,
        and every batch above the limit, dense. Both rules were measured on CPUs where the kernels win; they
        depend only on the layer and its input, never on a timing, so runs stay bit-reproducible (resume,
        paired seeds). "auto" (the trainer's default): so, or all dense without a warning where the kernels
        cannot be built (no C compiler) or the model is built for a GPU (`models.cbuild.cpu_kernels`); True:
        the same, with a warning where they cannot be built; False: all dense."""
        if on == "auto" and not cbuild.wanted():  # a model built for a GPU
            on = False
        why = spike_conv.unavailable_reason() if on else None
        if why:
            if on != "auto":
                warnings.warn(f"sparse_conv: the event-driven kernels cannot be built here ({why}); all "
                              "convolutions stay dense", stacklevel=2)
            on = False
        for name, m in self.named_modules():
            if isinstance(m, Conv2d):
                wide = m.out_channels // m.groups >= min_group_out
                sparse = bool(on) and wide and not name.startswith("prologue")
                m.sparse_limits = dict(limits or spike_conv.DENSITY_LIMITS) if sparse else None

    def init_weight(self) -> None:
        """trunc_normal std 0.02 for conv/linear, BN weight 1 bias 0 (as the original)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> stem once, broadcast to [T, B, C1, H1, W1]; [B, T, C, H, W] -> per step."""
        if self.prologue[0].weight.is_contiguous(memory_format=torch.channels_last) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if x.dim() == 4:
            y = x.unsqueeze(0)  # [1, B, C, H, W]
            for m in self.prologue:
                y = m(y, repeat=self.T) if isinstance(m, BN) else self._fold_apply(m, y)
            return y.expand(self.T, *y.shape[1:])  # [T, B, C1, H1, W1], a broadcast view
        if x.dim() != 5:
            raise ValueError(f"SpikingResformer expects [B, C, H, W] or [B, T, C, H, W], got {tuple(x.shape)}"
                             )
        y = x.transpose(0, 1)  # [T, B, C, H, W]
        for m in self.prologue:
            y = self._fold_apply(m, y)
        return y

    @staticmethod
    def _fold_apply(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
        if isinstance(m, nn.MaxPool2d):  # plain 4-D module: fold T into the batch
            return m(y.flatten(0, 1)).unflatten(0, y.shape[:2])
        return m(y)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Input -> pooled features [T, B, C3]."""
        y = self.layers(self.stem(x))  # [T, B, C3, H3, W3]
        return y.mean((3, 4))  # [T, B, C3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] or [B, T, C, H, W] -> per-step logits [T, B, K]."""
        return self.classifier(self.forward_features(x))  # [T, B, K]

    def dassdp_sites(self) -> dict[str, tuple[str, str, str]]:
        """DA-SSDP sites: the classifier and the first DSSA of the last stage (see the contract)."""
        last = len(self.layers) - 1
        first = next(j for j, m in enumerate(self.layers[last]) if isinstance(m, DSSA))
        return {"classifier": ("classifier", "linear", "weight"),
                "first_last_stage_dssa": (f"layers.{last}.{first}", "block", "Wproj.weight")}

    def no_weight_decay(self) -> set[str]:
        """PLIF `w` parameters (no weight decay, as the original)."""
        return {n for n, _ in self.named_parameters() if n.endswith(".w")}


def create(name: str, *, T: int = 4, num_classes: int | None = None, img_size: int | None = None,
           in_channels: int | None = None, frozen_ema: bool = False, sparse_conv: bool | str = False,
           pretrained: bool = False, **kwargs) -> SpikingResformer:
    """Build a registered variant by name (what the timm factories call)."""
    if pretrained:
        raise ValueError(f"{name}: no download URLs; build with pretrained=False and call "
                         "models.load_weights(model, path)")
    in_channels = in_channels or kwargs.pop("in_chans", None)  # timm's spelling
    unknown = set(kwargs) - {"pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "drop_rate",
                             "drop_path_rate"}
    if unknown:
        raise TypeError(f"{name}: unknown arguments {sorted(unknown)}")
    return SpikingResformer(ARCHS[name], T=T, num_classes=num_classes, img_size=img_size,
                            in_channels=in_channels or 3, frozen_ema=frozen_ema, sparse_conv=sparse_conv)


def _register(name: str):
    def factory(pretrained: bool = False, **kwargs) -> SpikingResformer:
        return create(name, pretrained=pretrained, **kwargs)

    factory.__name__ = name
    factory.__doc__ = f"{name}: {ARCHS[name]}"
    factory.__module__ = __name__
    return register_model(factory)


for _name in ARCHS:
    globals()[_name] = _register(_name)

