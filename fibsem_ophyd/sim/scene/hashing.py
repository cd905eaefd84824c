"""Deterministic hashing: a uniform number per integer lattice point and stream, from the seed."""

from __future__ import annotations

import numpy as np

__all__ = ["uniform"]

_G = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


_MASK = (1 << 64) - 1


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + _G
    t = x >> np.uint64(30)
    x ^= t
    x *= _M1
    np.right_shift(x, np.uint64(27), out=t)
    x ^= t
    x *= _M2
    np.right_shift(x, np.uint64(31), out=t)
    x ^= t
    return x


def _splitmix_int(x: int) -> int:
    """:func:`_splitmix` of one unsigned 64-bit integer (Python ints, wrapped to 64 bits)."""
    x = (x + int(_G)) & _MASK
    x = ((x ^ (x >> 30)) * int(_M1)) & _MASK
    x = ((x ^ (x >> 27)) * int(_M2)) & _MASK
    return x ^ (x >> 31)


def uniform(seed: int, salt, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Deterministic uniform [0, 1) per integer pair (i, j) for a stream ``salt``."""
    i, j = np.broadcast_arrays(np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64))
    shape = i.shape
    i = i.reshape(-1).view(np.uint64)
    j = j.reshape(-1).view(np.uint64)
    if np.ndim(salt) == 0:
        h = i ^ np.uint64(_splitmix_int((seed * int(_M2) + int(salt)) & _MASK))
    else:
        salt = np.broadcast_to(np.asarray(salt, dtype=np.int64), shape).reshape(-1)
        h = _splitmix(np.full(i.shape, seed, dtype=np.uint64) * _M2
                      + salt.view(np.uint64)) ^ i
    h = _splitmix(h)
    h ^= j * _M1
    h = _splitmix(h)
    h >>= np.uint64(11)
    return (h.astype(np.float64) * (1.0 / 9007199254740992.0)).reshape(shape)
