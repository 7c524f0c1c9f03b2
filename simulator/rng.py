"""Counter-based random numbers: ``uniform(seed, t, stream)`` is a pure function of its arguments.

The batched policy and the animations draw their randomness from a hash of (episode seed, frame,
stream) instead of a stateful generator, so an episode's actions do not depend on which other
episodes share its batch, on the device, or on how many frames were skipped. Integer arithmetic is
kept below 2**53 so the result is bit-exact on every device.
"""

from __future__ import annotations

import torch

_MASK = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for 32-bit ``x`` without int64 overflow."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + ((hi * (c & 0xFFFF)) << 16)) & _MASK


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A well-mixed 32-bit integer hash (the "lowbias32" finaliser) of int64 values < 2**32."""
    x = x & _MASK
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def fold_seed(seed: int) -> int:
    """Fold an arbitrary Python int seed into 32 bits."""
    seed = int(seed)
    return (seed ^ (seed >> 32) ^ (seed >> 64)) & _MASK


def hash_bits(seed: torch.Tensor, t: torch.Tensor | int, stream: torch.Tensor | int) -> torch.Tensor:
    """32 random bits per element, from int64 seeds (already folded), frame counters and stream
    ids (all broadcast together)."""
    t = torch.as_tensor(t, dtype=torch.int64, device=seed.device)
    x = hash32(seed ^ _mul32(t & _MASK, 0x9E3779B1))
    return hash32(x ^ ((stream * 0x85EBCA77) & _MASK))


def uniform(seed: torch.Tensor, t: torch.Tensor | int, stream: torch.Tensor | int) -> torch.Tensor:
    """Uniform float32 in [0, 1), one per element of the broadcast arguments."""
    return (hash_bits(seed, t, stream) >> 8).to(torch.float32) * (1.0 / (1 << 24))

