"""Many samples' crop windows and flips at once, bit-identical to `crops.sample_window` one by one.

`sample_window(recipe, train, h, w, seed)` draws a RandomResizedCrop from `random.Random(seed)` (CPython's
Mersenne Twister seeded by `init_by_array`) and a flip from `torch.rand(1)` on a generator seeded with
`manual_seed(seed)` (MT19937 seeded by `init_genrand` with the seed's low 32 bits), as the torchvision
backend's timm transform does. A Python loop over an ImageNet shard costs seconds at every epoch start; here
both generators run for a whole block of samples in numpy (one state row per twister word, one column per
sample), and only the first `WORDS` outputs of each are made. A sample that would need more (repeated
rejections in `randint`; a few in a billion) is drawn by `sample_window` itself.
"""
from __future__ import annotations

import math

import numpy as np

N = 624  # MT19937 state words
WORDS = 64  # outputs made per sample (10 RandomResizedCrop attempts use 40; each randint 1 or more)
BLOCK = 16384  # samples per block: the state is N x BLOCK uint32 (40 MiB)
_U32 = np.uint32


def _init_genrand(seed: int) -> list[int]:
    """init_genrand(seed) of the reference MT19937 (Python ints)."""
    mt = [seed & 0xFFFFFFFF]
    for i in range(1, N):
        mt.append((1812433253 * (mt[-1] ^ (mt[-1] >> 30)) + i) & 0xFFFFFFFF)
    return mt


_BASE = np.array(_init_genrand(19650218), dtype=_U32)  # init_by_array starts from this state


def _init_by_array(keys: list[np.ndarray]) -> np.ndarray:
    """[N, n] states of CPython's `random.seed(int)`: init_by_array with one key per column (the key words
    in `keys`, low word first, the same length for every column)."""
    n = len(keys[0])
    mt = np.empty((N, n), dtype=_U32)
    mt[:] = _BASE[:, None]
    tmp = np.empty(n, dtype=_U32)
    keys = [k + _U32(j) for j, k in enumerate(keys)]  # init_key[j] + j

    def mix(i: int, mult: int) -> None:  # mt[i] ^= (mt[i-1] ^ (mt[i-1] >> 30)) * mult, in place
        np.right_shift(mt[i - 1], 30, out=tmp)
        np.bitwise_xor(tmp, mt[i - 1], out=tmp)
        np.multiply(tmp, _U32(mult), out=tmp)
        np.bitwise_xor(mt[i], tmp, out=mt[i])

    i, j = 1, 0
    for _ in range(max(N, len(keys))):
        mix(i, 1664525)
        np.add(mt[i], keys[j], out=mt[i])
        i, j = i + 1, j + 1
        if i >= N:
            mt[0] = mt[N - 1]
            i = 1
        if j >= len(keys):
            j = 0
    for _ in range(N - 1):
        mix(i, 1566083941)
        np.subtract(mt[i], _U32(i), out=mt[i])
        i += 1
        if i >= N:
            mt[0] = mt[N - 1]
            i = 1
    mt[0] = 0x80000000
    return mt


def _init_genrand_rows(seeds32: np.ndarray, rows: int) -> np.ndarray:
    """The first `rows` words of init_genrand(seed) per column (torch's `manual_seed`)."""
    mt = np.empty((rows, len(seeds32)), dtype=_U32)
    mt[0] = seeds32
    for i in range(1, rows):
        prev = mt[i - 1]
        mt[i] = _U32(1812433253) * (prev ^ (prev >> 30)) + _U32(i)
    return mt


def _outputs(mt: np.ndarray, count: int) -> np.ndarray:
    """[count, n] first tempered outputs after a fresh twist of states [>= 398 + count, n]."""
    y = (mt[:count] & _U32(0x80000000)) | (mt[1:count + 1] & _U32(0x7FFFFFFF))
    w = mt[397:397 + count] ^ (y >> 1) ^ np.where((y & 1).astype(bool), _U32(0x9908B0DF), _U32(0))
    w ^= w >> 11
    w ^= (w << 7) & _U32(0x9D2C5680)
    w ^= (w << 15) & _U32(0xEFC60000)
    w ^= w >> 18
    return w


def torch_flips(seeds: np.ndarray, p: float) -> np.ndarray:
    """`torch.rand(1, generator=torch.Generator().manual_seed(s)) < p` for each seed (bool array)."""
    seeds = np.asarray(seeds, dtype=np.uint64)
    out = np.empty(len(seeds), dtype=bool)
    for s in range(0, len(seeds), BLOCK):
        low = (seeds[s:s + BLOCK] & np.uint64(0xFFFFFFFF)).astype(_U32)
        first = _outputs(_init_genrand_rows(low, 398), 1)[0]
        u = (first & _U32(0xFFFFFF)).astype(np.float32) * np.float32(2.0 ** -24)  # float32 uniform
        out[s:s + BLOCK] = u < np.float32(p)  # the tensor comparison casts p to float32
    return out


class _Stream:
    """Per-column cursor over the first WORDS outputs of each sample's CPython twister."""

    def __init__(self, words: np.ndarray):
        self.words = words  # [WORDS, n]
        self.pos = np.zeros(words.shape[1], dtype=np.int64)
        self.short = np.zeros(words.shape[1], dtype=bool)  # ran out: drawn by sample_window instead

    def take(self, cols: np.ndarray) -> np.ndarray:
        """The next 32-bit word of each column in cols."""
        p = self.pos[cols]
        over = p >= WORDS
        self.short[cols[over]] = True
        self.pos[cols] = p + 1
        return self.words[np.minimum(p, WORDS - 1), cols]

    def random(self, cols: np.ndarray) -> np.ndarray:
        """random.random(): 53 bits from two words."""
        a = (self.take(cols) >> 5).astype(np.float64)
        b = (self.take(cols) >> 6).astype(np.float64)
        return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0)

    def randbelow(self, cols: np.ndarray, n: np.ndarray) -> np.ndarray:
        """random._randbelow_with_getrandbits(n) for n >= 1: getrandbits(n.bit_length()), rejected >= n."""
        k = np.frexp(n.astype(np.float64))[1]  # bit_length, exact below 2**53
        out = np.empty(len(cols), dtype=np.int64)
        todo = np.arange(len(cols))
        while len(todo):
            r = (self.take(cols[todo]) >> (32 - k[todo]).astype(_U32)).astype(np.int64)
            ok = (r < n[todo]) | self.short[cols[todo]]
            out[todo[ok]] = r[ok]
            todo = todo[~ok]
        return out


def _rrc(words: np.ndarray, h: np.ndarray, w: np.ndarray, scale, ratio):
    """RandomResizedCrop windows as `crops.rrc_window`; returns (t, l, ch, cw, short)."""
    n = len(h)
    st = _Stream(words)
    t, l, ch, cw = (np.zeros(n, dtype=np.int64) for _ in range(4))
    done = np.zeros(n, dtype=bool)
    area = (h * w).astype(np.float64)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        cols = np.flatnonzero(~done)
        if not len(cols):
            break
        target = area[cols] * (scale[0] + (scale[1] - scale[0]) * st.random(cols))
        u = log_ratio[0] + (log_ratio[1] - log_ratio[0]) * st.random(cols)
        ar = np.array([math.exp(v) for v in u.tolist()], dtype=np.float64)  # libm's exp, as math.exp
        c_w = np.rint(np.sqrt(target * ar)).astype(np.int64)  # round half to even, as round()
        c_h = np.rint(np.sqrt(target / ar)).astype(np.int64)
        ok = (c_w > 0) & (c_w <= w[cols]) & (c_h > 0) & (c_h <= h[cols])
        cols, c_w, c_h = cols[ok], c_w[ok], c_h[ok]
        t[cols] = st.randbelow(cols, h[cols] - c_h + 1)
        l[cols] = st.randbelow(cols, w[cols] - c_w + 1)
        ch[cols], cw[cols] = c_h, c_w
        done[cols] = True
    rest = np.flatnonzero(~done)  # ten misses: the whole image clamped to the ratio range, centred
    hr, wr = h[rest], w[rest]
    in_ratio = wr / hr
    lo, hi = in_ratio < min(ratio), in_ratio > max(ratio)
    c_w = np.where(lo, wr, np.where(hi, np.rint(hr * max(ratio)).astype(np.int64), wr))
    c_h = np.where(lo, np.rint(wr / min(ratio)).astype(np.int64), hr)
    t[rest], l[rest], ch[rest], cw[rest] = (hr - c_h) // 2, (wr - c_w) // 2, c_h, c_w
    return t, l, ch, cw, st.short


def center_windows(hw: np.ndarray, size: tuple[int, int], resize: int) -> np.ndarray:
    """[n, 4] `crops.center_window` of each (h, w)."""
    h, w = hw[:, 0].astype(np.int64), hw[:, 1].astype(np.int64)
    f = resize / np.minimum(h, w)
    ch = np.minimum(h, np.rint(size[0] / f).astype(np.int64))
    cw = np.minimum(w, np.rint(size[1] / f).astype(np.int64))
    return np.stack([(h - ch) // 2, (w - cw) // 2, ch, cw], 1)


def sample_windows(recipe, train: bool, hw: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """[n, 5] int64 (top, left, height, width, flip) of samples with sizes hw [n, 2] (height, width) and
    seeds [n]: row k equals `crops.sample_window(recipe, train, *hw[k], seeds[k])`."""
    from pipelines.crops import sample_window

    hw = np.asarray(hw, dtype=np.int64).reshape(-1, 2)
    seeds = np.asarray(seeds).astype(np.uint64)
    n = len(seeds)
    out = np.zeros((n, 5), dtype=np.int64)
    if not train:
        out[:, :4] = center_windows(hw, recipe.size, recipe.eval_resize)
        return out
    out[:, 4] = torch_flips(seeds, recipe.hflip)
    if not recipe.random_crop:
        out[:, 2:4] = hw
        return out
    high = seeds >> np.uint64(32)
    for two_words in (False, True):  # CPython's key has one 32-bit word below 2**32, two above
        part = np.flatnonzero((high > 0) == two_words)
        for s in range(0, len(part), BLOCK):
            idx = part[s:s + BLOCK]
            keys = [(seeds[idx] & np.uint64(0xFFFFFFFF)).astype(_U32)]
            if two_words:
                keys.append(high[idx].astype(_U32))
            words = _outputs(_init_by_array(keys), WORDS)
            t, l, ch, cw, short = _rrc(words, hw[idx, 0], hw[idx, 1], recipe.crop_scale, recipe.crop_ratio)
            out[idx, :4] = np.stack([t, l, ch, cw], 1)
            for k in np.flatnonzero(short).tolist():  # out of pre-made words: the scalar draw
                i = int(idx[k])
                out[i] = sample_window(recipe, True, int(hw[i, 0]), int(hw[i, 1]), int(seeds[i]))
    return out
