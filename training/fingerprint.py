"""Checkpoint fingerprints: a model's logits on a fixed input, stored with its weights.

A library upgrade can change what the same weights compute (a padding rule, a layer's
default, a key renamed and silently skipped): every prediction drifts, nothing fails.
So every checkpoint stores its logits on a deterministic input (a closed-form pattern,
the same on every machine and version), and loading recomputes them: a difference
beyond float noise is an error naming the checkpoint, the difference and the versions.

The input is built in the model's normalised input space at the config's size (and
clip length for a sequence model); logits are computed in float32 (no autocast, no TF32).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

VERSION = "sin-v1"
ATOL, RTOL = 1e-2, 1e-2  # CPU vs GPU float32 differ by ~1e-5; drift is of order 1


class FingerprintError(ValueError):
    """The model built from a checkpoint does not compute what it computed when saved (a
    ValueError: the CLIs report it as a bad checkpoint, with its message)."""


def fingerprint_input(cfg: dict) -> torch.Tensor:
    """(1, 3, h, w), or (1, T, 3, h, w) for a sequence model: sin(0.071 i + 0.113 j + 1.3 c
    + 0.7 t) * 1.5, computed in float64 and rounded to float32."""
    from .config import input_hw, is_clip_model

    h, w = input_hw(cfg)
    seq = cfg["data"]["seq_len"] if is_clip_model(cfg) else 0
    t = torch.arange(max(seq, 1), dtype=torch.float64).view(-1, 1, 1, 1)
    c = torch.arange(3, dtype=torch.float64).view(1, 3, 1, 1)
    i = torch.arange(h, dtype=torch.float64).view(1, 1, h, 1)
    j = torch.arange(w, dtype=torch.float64).view(1, 1, 1, w)
    x = (torch.sin(0.071 * i + 0.113 * j + 1.3 * c + 0.7 * t) * 1.5).float()
    return x.unsqueeze(0) if seq else x[:1]


@contextmanager
def _exact_float32():
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


@torch.no_grad()
def logits(model: torch.nn.Module, cfg: dict) -> list[float]:
    """The model's eval-mode logits on the fingerprint input (training mode restored)."""
    module = model.module if hasattr(model, "module") else model
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    try:
        with _exact_float32(), torch.autocast(device.type, enabled=False):
            x = fingerprint_input(cfg).to(device)
            per_frame = getattr(getattr(module, "video", None), "input_features", None)
            if per_frame:  # a visual stream that reads per-frame numbers (LipStream), not crops
                f = torch.arange(x.shape[1] * per_frame, dtype=torch.float64).view(1, x.shape[1], per_frame)
                x = (torch.sin(0.29 * f) * 1.5).float().to(device)
            if cfg["network"] == "DissonanceNet":  # a segment's face crops and its MFCCs
                width = round(100 * float(cfg["data"].get("av_segment_s", 1.0)))  # 10-ms MFCC steps
                m = torch.arange(13 * width, dtype=torch.float64).view(1, 1, 13, width)
                r = module(x, (torch.sin(0.37 * m) * 4.0).float().to(device))
                out = torch.cat([r.distance, r.video_logit, r.audio_logit])
            else:
                out = module(x)
    finally:
        module.train(was_training)
    return [float(v) for v in out.float().flatten().cpu()]


def versions() -> dict:
    import timm

    return {"torch": torch.__version__, "timm": timm.__version__}


def make(model: torch.nn.Module, cfg: dict) -> dict:
    return {"version": VERSION, "logits": logits(model, cfg), **versions()}


def verify(model: torch.nn.Module, cfg: dict, record: dict, name: str) -> float:
    """Recompute and compare; returns the largest difference or raises FingerprintError."""
    if record.get("version") != VERSION:
        raise FingerprintError(f"{name}: fingerprint version {record.get('version')!r} is not {VERSION!r}")
    saved = torch.tensor(record["logits"], dtype=torch.float64)
    now = torch.tensor(logits(model, cfg), dtype=torch.float64)
    if now.shape != saved.shape:
        raise FingerprintError(f"{name}: the model gives {now.numel()} logits on the fingerprint input, "
                               f"the checkpoint recorded {saved.numel()}")
    diff = float((now - saved).abs().max())
    tol = ATOL + RTOL * float(saved.abs().max())
    if not diff <= tol:
        then = ", ".join(f"{k} {record.get(k)}" for k in ("torch", "timm"))
        here = ", ".join(f"{k} {v}" for k, v in versions().items())
        raise FingerprintError(
            f"{name}: the model built from this checkpoint no longer computes what it computed when saved "
            f"(logits on the fingerprint input differ by {diff:.4g} > {tol:.3g}; saved {record['logits'][:3]}, "
            f"now {[round(v, 6) for v in now.tolist()[:3]]}). Saved with {then}; now {here}. A library upgrade "
            f"or a code change altered the model: install the versions it was saved with (requirements.txt).")
    return diff
