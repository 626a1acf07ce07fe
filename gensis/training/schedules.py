"""Per-iteration schedules as arrays, as in DINO's ``main_dino.py``: index them by global step."""

from __future__ import annotations

import numpy as np


def cosine_schedule(base: float, final: float, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0,
                    warmup_start: float = 0.0) -> np.ndarray:
    """Linear warm-up from ``warmup_start`` to ``base`` over ``warmup_epochs``, then cosine from ``base`` to ``final``.

    Length ``epochs * steps_per_epoch``; the first value is ``warmup_start`` (or ``base``) and the
    last is ``final``.
    """
    total = epochs * steps_per_epoch
    warmup_steps = min(int(round(warmup_epochs * steps_per_epoch)), total)
    warmup = np.linspace(warmup_start, base, warmup_steps, endpoint=False) if warmup_steps else np.zeros(0)
    rest = total - warmup_steps
    if rest <= 0:
        return warmup[:total]
    progress = np.arange(rest) / max(rest - 1, 1)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * progress))
    return np.concatenate([warmup, cosine])


def teacher_temperature_schedule(warmup_temp: float, temp: float, warmup_epochs: int, epochs: int) -> np.ndarray:
    """Per-epoch teacher temperature: linear warm-up, then constant (DINO)."""
    warm = np.linspace(warmup_temp, temp, warmup_epochs) if warmup_epochs else np.zeros(0)
    return np.concatenate([warm, np.full(max(epochs - warmup_epochs, 0), temp)])[:max(epochs, 1)]


def curriculum_progress(epoch: int, epochs: int, kind: str) -> float:
    """Where a curriculum stands at ``epoch`` (0-based) of ``epochs``: 0 at the first epoch, 1 at the last;
    ``linear`` (t) or ``cosine`` ((1 - cos(pi t)) / 2: slow at both ends)."""
    t = min(max(epoch / max(epochs - 1, 1), 0.0), 1.0)
    return t if kind == "linear" else 0.5 * (1.0 - float(np.cos(np.pi * t)))
