"""Turn the per-face fake probabilities of one video into one probability for the video.

The competition scored videos, not faces, by log loss, so how the face probabilities
of a video are pooled matters as much as the model: a plain mean is safe but timid,
and the winning teams pooled more boldly where their models agreed.

    aggregate(face_probs, "confident")             # one model
    ensemble([probs_model_a, probs_model_b])       # several models, one video

Every strategy takes a 1-D array of probabilities in [0, 1] and returns a float.
A video with no face at all gets 0.5: the log loss of a coin flip (ln 2) is the least
bad answer we can give without evidence, and the submission needs a row per video.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

#: The answer for a video without any prediction: maximal uncertainty.
NO_EVIDENCE = 0.5


def _as_probs(pred) -> np.ndarray:
    """`pred` as a flat float64 array, refusing values that cannot be probabilities.

    A NaN or a logit passed by mistake would silently poison a whole submission (one
    NaN row makes the metric NaN), so fail loudly here rather than write it.
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    if not np.all(np.isfinite(p)):
        raise ValueError("face probabilities contain NaN or inf")
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(f"face probabilities must lie in [0, 1], got range "
                         f"[{p.min():.4g}, {p.max():.4g}] (logits passed instead of probabilities?)")
    return p


def confident_strategy(pred, t: float = 0.8) -> float:
    """selim's (DFDC 1st place) pooling: trust a confident majority, else the mean.

    A face swap often covers only some frames or one of several faces, so the mean
    of a fake video's faces is dragged towards 0.5 by the untouched ones. Hence:
      * if many faces (more than len/2.5, rounded down, and more than 11) are
        above `t`, the video is fake: return the mean of those confident faces only;
      * else if more than 90% of the faces are below 0.2, the video is real:
        return the mean of those, ignoring a few stray high predictions;
      * else the evidence is mixed: return the plain mean.
    The "more than 11" guard keeps a handful of frames from deciding a video; it
    assumes selim's setting of ~32 frames per video (fewer faces never take branch 1).
    """
    p = _as_probs(pred)
    size = p.size
    if size == 0:
        return NO_EVIDENCE
    confident_fake = p > t
    num_fakes = int(np.count_nonzero(confident_fake))
    # `size // 2.5` floors a float division, exactly as in selim's code (20 // 2.5 == 8.0).
    if num_fakes > size // 2.5 and num_fakes > 11:
        return float(p[confident_fake].mean())
    confident_real = p < 0.2
    if np.count_nonzero(confident_real) > 0.9 * size:
        return float(p[confident_real].mean())
    return float(p.mean())


def ntech_transform(p, power: float = 0.65, clip=(0.01, 0.99)) -> np.ndarray:
    """NTech's (DFDC 3rd place) confidence transform, vectorised.

    d = p - 0.5;  p' = 0.5 + sign(d) * |d| ** power,  clipped to `clip`.

    With power < 1, |d| ** power > |d| for 0 < |d| < 1, so the transform pushes every
    probability AWAY from 0.5 (sharpens it). It is not a map of [0, 1] onto itself:
    0.5 ** 0.65 = 0.637 > 0.5, so p' would leave [0, 1] for |d| > 0.5 ** (1 / power)
    (= 0.344 at power 0.65, i.e. p > 0.844 or p < 0.156). The clip catches those and
    also bounds the worst-case log loss of a wrong video (-ln 0.01 = 4.6).
    p = 0.5 maps to 0.5 (sign(0) = 0).
    """
    p = np.asarray(p, dtype=np.float64)
    d = p - 0.5
    sharpened = 0.5 + np.sign(d) * np.abs(d) ** power
    return np.clip(sharpened, clip[0], clip[1])


def ntech_strategy(pred, power: float = 0.65, clip=(0.01, 0.99)) -> float:
    """Confidence-weighted mean of the NTech-transformed probabilities.

    Weights are w = |p - 0.5| + 1e-4 computed from the ORIGINAL probabilities, as the
    spec (w = |d| + 1e-4, d = p - 0.5) says. We deliberately do not weight by the
    transformed p': the clip flattens every p above 0.844 (or below 0.156) to the same
    value, so weights from p' would treat a face at 0.85 and one at 0.999 as equally
    sure; the original p keeps that ranking. The 1e-4 keeps the weights from all being
    zero when every face sits at exactly 0.5.
    """
    p = _as_probs(pred)
    if p.size == 0:
        return NO_EVIDENCE
    weights = np.abs(p - 0.5) + 1e-4
    return float(np.average(ntech_transform(p, power, clip), weights=weights))


def mean_strategy(pred) -> float:
    """The plain mean of the face probabilities: the baseline (and what training's
    validation metric uses)."""
    p = _as_probs(pred)
    if p.size == 0:
        return NO_EVIDENCE
    return float(p.mean())


#: Strategy name -> function(pred) -> float, for command-line choices.
STRATEGIES: dict[str, Callable] = {
    "confident": confident_strategy,
    "ntech": ntech_strategy,
    "mean": mean_strategy,
}


def _lookup_strategy(name: str) -> Callable:
    """The strategy function of `name`, or a ValueError that lists the valid names."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown aggregation strategy {name!r}; "
                         f"choose one of {', '.join(sorted(STRATEGIES))}") from None


def aggregate(pred, strategy: str = "confident") -> float:
    """One video's probability from its face probabilities with the named strategy.

    An empty `pred` (no face found) gives 0.5 whatever the strategy.
    """
    pool = _lookup_strategy(strategy)
    p = _as_probs(pred)
    if p.size == 0:
        return NO_EVIDENCE
    return float(pool(p))


def ensemble(model_preds: list[np.ndarray], strategy: str = "confident", weights: list[float] | None = None) -> float:
    """One video's probability from several models.

    "ntech" pools ALL models' predictions together, as NTech's submission did: one
    confidence-weighted mean of the transformed predictions of every face, clip frame
    and model (their sequence model's per-frame predictions and their two frame models'
    sit side by side in one list).

    The other strategies pool each model's predictions with `strategy`, then average
    the per-model results (weighted by `weights`, one per model, when given).

    Why pool per model first rather than concatenate all predictions: models need not
    yield the same number of predictions (a frame model gives one per face, a sequence
    model one per clip), so a concatenation would weight a model by how many outputs it
    makes; and the confident strategy's thresholds (more than 11 confident faces) are
    counts of one model's faces. selim's submission did the same (strategy per model,
    then the mean).

    A model with no prediction for this video (e.g. too few frames for a clip) is left
    out instead of counted as 0.5, which would only dilute the models that did see
    faces. With no predictions from any model the answer is 0.5.
    """
    _lookup_strategy(strategy)  # a bad name fails even when every model is empty
    per_model = [_as_probs(pred) for pred in model_preds]
    if strategy == "ntech":
        return aggregate(np.concatenate(per_model) if per_model else np.zeros(0), "ntech")
    weights = [1.0] * len(per_model) if weights is None else [float(w) for w in weights]
    if len(weights) != len(per_model):
        raise ValueError(f"{len(weights)} weights for {len(per_model)} models")
    pooled = [(aggregate(p, strategy), w) for p, w in zip(per_model, weights) if p.size and w > 0]
    if not pooled:
        return NO_EVIDENCE
    return float(sum(v * w for v, w in pooled) / sum(w for _, w in pooled))


def mos_ensemble(model_preds: list[np.ndarray], weights: list[float] | None = None) -> float | None:
    """One video's MOS from realism models: each model's mean over its clips (VRA: 10
    random sequences), then the weighted mean of the models that scored the video (VRA:
    0.75 ConvNeXt + 0.25 EVA). None when no model scored it."""
    weights = [1.0] * len(model_preds) if weights is None else [float(w) for w in weights]
    if len(weights) != len(model_preds):
        raise ValueError(f"{len(weights)} weights for {len(model_preds)} models")
    pairs = [(float(np.mean(p)), w) for p, w in zip(model_preds, weights) if np.asarray(p).size and w > 0]
    if not pairs:
        return None
    return sum(m * w for m, w in pairs) / sum(w for _, w in pairs)
