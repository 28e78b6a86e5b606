"""FFCV decoder with seeded crop/flip: randomness is a function of (seed, epoch, sample index)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES, ResizedCropRGBImageDecoder
from ffcv.libffcv import imdecode, resize_crop
from ffcv.pipeline.compiler import Compiler
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_G = np.uint64(0x9E3779B97F4A7C15)
_A = np.uint64(0xBF58476D1CE4E5B9)
_B = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


@intrinsic
def _as_pointer(typingctx, addr):
    """int64 address -> void* (reads the live epoch state, not a compile-time copy)."""
    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(addr), codegen


@njit(nogil=True)
def _splitmix(x):
    z = x + _G
    z = (z ^ (z >> _S30)) * _A
    z = (z ^ (z >> _S27)) * _B
    return z ^ (z >> _S31)


@njit(nogil=True)
def _uniform(state):
    """Next uniform in [0, 1) and the next state (splitmix64 stream)."""
    state = state + _G
    return (_splitmix(state) >> _S11) * (1.0 / 9007199254740992.0), state


@njit(nogil=True)
def _crop(mode, height, width, state, scale0, scale1, lr0, lr1, ratio_min, ratio_max, center_frac):
    """(i, j, h, w, state): torchvision RandomResizedCrop params (mode 0), whole image (1), center (2)."""
    if mode == 1:
        return 0, 0, height, width, state
    if mode == 2:  # timm eval: shorter side -> size / crop_pct, center crop size
        c = int(round(min(height, width) * center_frac))  # square crop in source pixels
        h, w = min(height, c), min(width, c)
        return (height - h) // 2, (width - w) // 2, h, w, state
    area = height * width
    for _ in range(10):
        u, state = _uniform(state)
        target = area * (scale0 + (scale1 - scale0) * u)
        u, state = _uniform(state)
        ar = np.exp(lr0 + (lr1 - lr0) * u)
        w = int(round(np.sqrt(target * ar)))
        h = int(round(np.sqrt(target / ar)))
        if 0 < w <= width and 0 < h <= height:
            u, state = _uniform(state)
            i = int(u * (height - h + 1))
            u, state = _uniform(state)
            j = int(u * (width - w + 1))
            return i, j, h, w, state
    in_ratio = width / height
    if in_ratio < ratio_min:
        w, h = width, int(round(width / ratio_min))
    elif in_ratio > ratio_max:
        h, w = height, int(round(height * ratio_max))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w, state


class SeededCropDecoder(ResizedCropRGBImageDecoder):
    """RGBImageField decoder: seeded RandomResizedCrop (or resize / center crop) + optional flip, INTER_AREA.

    `state` is a live uint64 array [base_seed, 1 + index of a sample that failed to decode (0: none)];
    the loader rewrites it every epoch.
    mode 0: RandomResizedCrop(scale, ratio); 1: whole image resized; 2: center crop of crop_frac of the
    shorter side (eval).
    """

    def __init__(self, output_size, state: np.ndarray, mode: int, flip: bool, scale=(0.08, 1.0),
                 ratio=(3 / 4, 4 / 3), crop_frac: float = 1.0):
        super().__init__(output_size)
        self.state, self.mode, self.flip = state, mode, flip
        self.scale, self.ratio, self.crop_frac = scale, ratio, crop_frac

    def declare_state_and_memory(self, previous_state):
        state, allocs = super().declare_state_and_memory(previous_state)
        return replace(state, jit_mode=True), allocs

    @property
    def get_crop_generator(self):
        return _crop

    def generate_code(self):
        jpg, mem_read, my_range = IMAGE_MODES["jpg"], self.memory_read, Compiler.get_iterator()
        imdecode_c, resize_crop_c = Compiler.compile(imdecode), Compiler.compile(resize_crop)
        crop_c, uniform_c, mix_c = _crop, _uniform, _splitmix
        addr, mode, flip, frac = self.state.ctypes.data, self.mode, self.flip, self.crop_frac
        s0, s1 = float(self.scale[0]), float(self.scale[1])
        lr0, lr1 = float(np.log(self.ratio[0])), float(np.log(self.ratio[1]))
        rmin, rmax = float(min(self.ratio)), float(max(self.ratio))

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            live = carray(_as_pointer(addr), 2, np.uint64)
            base = live[0]
            for dst_ix in my_range(len(batch_indices)):
                source_ix = batch_indices[dst_ix]
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height, width = np.uint32(field["height"]), np.uint32(field["width"])
                if field["mode"] == jpg:
                    temp = temp_storage[dst_ix]
                    err = imdecode_c(image_data, temp, height, width, height, width, 0, 0, 1, 1, False, False)
                    if err != 0:  # record the failing sample; the loader raises a DataError naming it
                        live[1] = np.uint64(source_ix) + np.uint64(1)
                    temp = temp.reshape(-1)[: 3 * height * width].reshape(height, width, 3)
                else:
                    temp = image_data.reshape(height, width, 3)
                st = mix_c(base ^ (np.uint64(source_ix) * _G))
                i, j, h, w, st = crop_c(mode, int(height), int(width), st, s0, s1, lr0, lr1, rmin, rmax, frac)
                out = destination[dst_ix]
                resize_crop_c(temp, i, i + h, j, j + w, out)
                u, st = uniform_c(st)
                if flip and u < 0.5:
                    W = out.shape[1]
                    for r in range(out.shape[0]):
                        for c in range(W // 2):
                            for k in range(3):
                                t = out[r, c, k]
                                out[r, c, k] = out[r, W - 1 - c, k]
                                out[r, W - 1 - c, k] = t
            return destination[: len(batch_indices)]

        decode.is_parallel = True
        return decode


_ = ir  # llvmlite imported so numba's intrinsic codegen has it loaded
