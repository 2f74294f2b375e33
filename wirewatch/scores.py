"""Precision, recall and F1, as every evaluation command (topics, duplicates) reports them."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def prf(pred: NDArray[np.bool_], truth: NDArray[np.bool_]) -> tuple[float, float, float]:
    """Precision, recall and F1 of the predictions against the truth (0 where undefined)."""
    tp = float((pred & truth).sum())
    p = tp / pred.sum() if pred.sum() else 0.0
    r = tp / truth.sum() if truth.sum() else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)
