"""Temperature calibration of video probabilities: one scalar T, fitted on validation.

The competition metric is log loss, which punishes a confident mistake without bound,
so a model that is right on average but over-confident (the usual case for a network
trained to convergence, and worse after the sharpening aggregation strategies) loses
points it need not lose. Temperature scaling divides the logit by T:

    p_calibrated = sigmoid(logit(p) / T)

T > 1 softens over-confident predictions, T < 1 sharpens timid ones, T = 1 changes
nothing. One parameter cannot overfit a small validation set and, being monotonic,
never changes the ranking (AUC) of the videos.

    T = fit_temperature(val_video_probs, val_labels)
    save_calibration(weights_dir / "calibration.json", T, {"videos": len(val_labels)})
    probs = apply_temperature(test_video_probs, load_calibration(path))
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit

from preprocessing.artifacts import atomic_write_json

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit, so that a 0 or a 1
#: gives a large finite logit (about +-13.8) instead of an infinite one.
EPS = 1e-6

#: The search interval of T: from a 20x sharpening to a 20x softening, far wider than
#: any sensible model needs; a fit that lands on an end means the data is degenerate
#: (e.g. one class only).
T_BOUNDS = (0.05, 20.0)


def _logits(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    return logit(np.clip(p, EPS, 1.0 - EPS))


def _check_temperature(T) -> float:
    T = float(T)
    if not (math.isfinite(T) and T > 0):
        raise ValueError(f"temperature must be a positive finite number, got {T}")
    return T


def apply_temperature(probs, T) -> np.ndarray:
    """sigmoid(logit(p) / T) element-wise; p is clipped to [1e-6, 1 - 1e-6] first."""
    return expit(_logits(probs) / _check_temperature(T))


def _log_loss_of_logits(z: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """Mean binary log loss (weighted by w when given) of logits z against labels y.

    Written with logaddexp (log(1 + e^z) without overflow) so it stays exact for the
    large logits a small T produces, where computing sigmoid first would round to 0/1.
    """
    losses = y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)
    return float(np.average(losses, weights=w))


def fit_temperature(probs, labels, balanced: bool = False, min_temperature: float | None = None) -> float:
    """The T in [0.05, 20] that minimises the log loss of sigmoid(logit(p) / T) vs labels.

    `probs` are video probabilities of FAKE, `labels` 1 for FAKE and 0 for REAL (soft
    labels in [0, 1] also work). The loss is convex in 1/T, so a bounded scalar search
    finds the single minimum. `balanced`: minimise the balanced log loss (the mean of
    the REAL and the FAKE videos' log losses, selim's score) instead: each class weighs
    one half whatever the ratio (hard labels, rounded at 0.5). `min_temperature` raises
    the lower bound: 1 lets the fit soften the scores but never sharpen them (the
    constrained minimum, the loss being unimodal in T).
    """
    low = T_BOUNDS[0]
    if min_temperature is not None:
        if not (math.isfinite(float(min_temperature)) and T_BOUNDS[0] <= float(min_temperature) <= T_BOUNDS[1]):
            raise ValueError(f"min_temperature must lie in [{T_BOUNDS[0]}, {T_BOUNDS[1]}], got {min_temperature}")
        low = float(min_temperature)
    z = _logits(probs).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if z.size == 0:
        raise ValueError("cannot fit a temperature on no predictions")
    if z.shape != y.shape:
        raise ValueError(f"{z.size} probabilities but {y.size} labels")
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(y))):
        raise ValueError("probabilities or labels contain NaN or inf")
    if y.min() < 0 or y.max() > 1:
        raise ValueError("labels must lie in [0, 1] (1 = FAKE)")
    w = None
    if balanced:
        hard = y >= 0.5
        if hard.all() or not hard.any():
            raise ValueError("a balanced fit needs REAL and FAKE videos")
        w = np.where(hard, 0.5 / hard.sum(), 0.5 / (~hard).sum())
    result = minimize_scalar(lambda T: _log_loss_of_logits(z / T, y, w),
                             bounds=(low, T_BOUNDS[1]), method="bounded", options={"xatol": 1e-6})
    if low > T_BOUNDS[0] and result.x - low < 1e-5:
        return low  # the bound itself (the bounded search stops just inside it)
    return float(result.x)


def save_calibration(path, T, meta: dict | None = None) -> None:
    """Write {"temperature": T, **meta} as JSON, atomically (a killed run leaves no half file).

    `meta` records where T came from (fold, number of videos, log loss before/after).
    """
    record = {"temperature": _check_temperature(T)}
    for key, value in (meta or {}).items():
        if key == "temperature":
            raise ValueError("meta must not contain the key 'temperature'")
        record[key] = value
    atomic_write_json(path, record)


def load_calibration(path: str | os.PathLike) -> float:
    """The temperature stored in `path`; a FileNotFoundError or ValueError naming the
    file when it is missing, not JSON, or holds no valid temperature."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file not found: {path}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"calibration file {path} is not valid JSON: {e}") from None
    if not isinstance(record, dict) or "temperature" not in record:
        raise ValueError(f"calibration file {path} has no 'temperature' entry")
    try:
        return _check_temperature(record["temperature"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"calibration file {path}: {e}") from None
