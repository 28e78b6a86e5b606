"""FFCV decoder that reads per-sample crop windows and flips from a live table (filled every epoch).

The table is computed on the host with the torchvision backend's seeds (`crops.sample_window`), so ffcv,
DALI and torchvision draw identical crops and flips for a given (seed, epoch, index).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES, ResizedCropRGBImageDecoder
from ffcv.libffcv import imdecode, resize_crop
from ffcv.pipeline.compiler import Compiler
from numba import carray, types
from numba.core import cgutils
from numba.extending import intrinsic

# Every dispatcher `generate_code` compiles stays referenced until the interpreter exits. numba's dispatcher
# finalizer walks the dispatcher's overload table, and for these ffcv helpers (typed while ffcv's pipeline
# threads compile) that walk raised `KeyError` when a loader was freed mid-run, printed as an "Exception
# ignored in: <finalize object>" traceback. At interpreter exit numba skips the walk. The cost is one small
# compiled helper pair per loader built.
_COMPILED: list = []


@intrinsic
def _as_pointer(typingctx, addr):
    """int64 address -> void* (numba freezes captured arrays at compile time; this reads the live one)."""
    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(addr), codegen


class WindowCropDecoder(ResizedCropRGBImageDecoder):
    """RGBImageField decoder: crop `windows[i] = (top, left, height, width, flip)`, INTER_AREA resize, flip.

    `windows` (int32 [N, 5]) and `error` (uint64 [1]: 1 + index of a sample that failed to decode, 0: none)
    are live arrays owned by the loader; they must never be reallocated.
    """

    def __init__(self, output_size, windows: np.ndarray, error: np.ndarray):
        super().__init__(output_size)
        self.windows, self.error = windows, error

    def declare_state_and_memory(self, previous_state):
        state, allocs = super().declare_state_and_memory(previous_state)
        return replace(state, jit_mode=True), allocs

    @property
    def get_crop_generator(self):
        raise NotImplementedError  # windows come from the table

    def generate_code(self):
        jpg, mem_read, my_range = IMAGE_MODES["jpg"], self.memory_read, Compiler.get_iterator()
        imdecode_c, resize_crop_c = Compiler.compile(imdecode), Compiler.compile(resize_crop)
        _COMPILED.append((imdecode_c, resize_crop_c))
        win_addr, err_addr, n = self.windows.ctypes.data, self.error.ctypes.data, len(self.windows)

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            windows = carray(_as_pointer(win_addr), (n, 5), np.int32)
            error = carray(_as_pointer(err_addr), 1, np.uint64)
            for dst_ix in my_range(len(batch_indices)):
                source_ix = batch_indices[dst_ix]
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height, width = np.uint32(field["height"]), np.uint32(field["width"])
                if field["mode"] == jpg:
                    temp = temp_storage[dst_ix]
                    err = imdecode_c(image_data, temp, height, width, height, width, 0, 0, 1, 1, False, False)
                    if err != 0:  # record the failing sample; the loader raises a DataError naming it
                        error[0] = np.uint64(source_ix) + np.uint64(1)
                    temp = temp.reshape(-1)[: 3 * height * width].reshape(height, width, 3)
                else:
                    temp = image_data.reshape(height, width, 3)
                win = windows[source_ix]
                i, j, h, w = win[0], win[1], win[2], win[3]
                out = destination[dst_ix]
                resize_crop_c(temp, i, i + h, j, j + w, out)
                if win[4]:
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
