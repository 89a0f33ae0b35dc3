"""A decoded batch: what a decoder hands back for a batch of files (numpy only; the pool and the decoders share it)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Batch:
    """What a worker sends back for a batch of files: the decoded rows in one array (or in its slot
    of the shared ring, when it was given one) and, per file, its reason if rejected, hash and size."""

    pixels: np.ndarray | None  # (n_ok, S, S, 3) uint8, in file order; None when in the ring
    reasons: list[str]  # "" where decoded
    digests: list[str]
    sizes: list[int]
    channel_sums: np.ndarray  # (3,) float64: exact per-channel sums of the pixels, for the train mean
    pixel_digests: list[bytes] = field(default_factory=list)  # pixel_digest of each decoded row, in order


def channel_sums(pixels: np.ndarray) -> np.ndarray:
    """Exact per-channel sums (3,) of (N, S, S, 3) uint8 pixels, as float64, for the train mean.

    Whole rows are summed first: a reduction over a (N, 3) view is ten times slower.
    """
    per_row = pixels.reshape(-1, pixels.shape[-2] * 3).sum(axis=0, dtype=np.uint64)
    return per_row.reshape(-1, 3).sum(axis=0).astype(np.float64)


def pixel_digest(row: np.ndarray) -> bytes:
    """A 16-byte BLAKE2 digest of one decoded image's pixels: equal for equal pixels, whatever the file's bytes."""
    return hashlib.blake2b(np.ascontiguousarray(row).data, digest_size=16).digest()
