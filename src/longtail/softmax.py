"""Softmax over model outputs: the registry's models return logits, and predict, evaluate and training need probabilities."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike


def softmax(logits: np.ndarray, dtype: DTypeLike = np.float64) -> np.ndarray:
    """Row-wise softmax of (N, C) logits, computed in `dtype`.

    Training's per-epoch figures and tau tuning use float64; predict and evaluate use float32, the
    dtype the model outputs (each keeps the arithmetic it always had, so no figure moves).
    """
    z = np.asarray(logits, dtype=dtype)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
