"""How well the same-story decision works on labelled pairs (``a``, ``b``, ``is_duplicate`` per JSON line).

Each text is embedded with the packaged model (as classify would) and fingerprinted, and the pair scored
with the very function folding uses (:func:`alerts.fingerprint.similarity`); we report precision, recall
and F1 at the configured threshold and at the threshold that maximizes F1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alerts.fingerprint import Print, similarity
from wirewatch.scores import prf as _prf


class PairsError(ValueError):
    """A pairs file that cannot be read; the message names the line."""


@dataclass(frozen=True)
class Pair:
    """One labelled pair."""

    a: str
    b: str
    is_duplicate: bool


@dataclass(frozen=True)
class Report:
    """Figures at the configured threshold and the best one."""

    precision: float
    recall: float
    f1: float
    threshold: float
    best_threshold: float
    best_f1: float
    pairs: int

    def as_dict(self) -> dict[str, float | int]:
        """The ``--json`` object."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def read_pairs(path: Path) -> list[Pair]:
    """Read a pairs file. Raises PairsError naming the first bad line and what is wrong with it."""
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PairsError(f"{path}: cannot read ({exc})") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PairsError(f"{path}:{n}: not JSON ({exc.msg})") from exc
        if not isinstance(d, dict) or not isinstance(d.get("a"), str) or not isinstance(d.get("b"), str) \
                or not isinstance(d.get("is_duplicate"), bool):
            raise PairsError(f"{path}:{n}: expected an object with string 'a', 'b' and boolean 'is_duplicate'")
        out.append(Pair(d["a"], d["b"], d["is_duplicate"]))
    if not out:
        raise PairsError(f"{path}: no pairs")
    return out


def prf(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """Precision, recall and F1 of ``scores >= threshold``."""
    return _prf(scores >= threshold, labels)


def score_pairs(pairs: list[Pair], vectors: dict[str, np.ndarray]) -> np.ndarray:
    """The same-story similarity of each pair."""
    prints = {t: Print.of(t) for t in vectors}
    return np.array([similarity(prints[p.a], prints[p.b], float(vectors[p.a] @ vectors[p.b])) for p in pairs])


def evaluate(scores: np.ndarray, labels: np.ndarray, threshold: float) -> Report:
    """Figures at ``threshold`` and at the F1-best threshold (searched over the observed scores)."""
    p, r, f = prf(scores, labels, threshold)
    best_t, best_f = threshold, f
    for t in np.unique(np.round(scores, 3)):
        f_t = prf(scores, labels, float(t))[2]
        if f_t > best_f:
            best_t, best_f = float(t), f_t
    return Report(p, r, f, threshold, best_t, best_f, len(labels))
