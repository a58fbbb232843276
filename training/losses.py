"""Losses on logits. Targets may be soft (mixup t, distillation sigmoid(teacher))."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth(target: torch.Tensor, eps: float) -> torch.Tensor:
    """Label smoothing for a binary target: pulls 0/1 towards 0.5 by eps."""
    return target * (1 - eps) + 0.5 * eps if eps else target


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float().view(-1), target.float().view(-1))


def balanced_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """selim's balanced loss: the mean of the fake-half loss and the real-half loss, so a
    batch that happens to hold more fakes does not tilt the model (DFDC is 5:1 fake)."""
    logits, target = logits.float().view(-1), target.float().view(-1)
    per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    fake = target > 0.5
    parts = [per[m].mean() for m in (fake, ~fake) if m.any()]
    return torch.stack(parts).mean()


LOSS_FUNCTIONS = {"BinaryCrossentropy": bce, "BalancedBinaryCrossentropy": balanced_bce}


class WeightedLoss:
    """The config's `losses`: {name: weight}, summed."""

    def __init__(self, losses: dict[str, float], label_smoothing: float = 0.0):
        self.parts = [(LOSS_FUNCTIONS[name], float(w)) for name, w in losses.items()]
        self.label_smoothing = label_smoothing

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = smooth(target, self.label_smoothing)
        return sum(w * fn(logits, target) for fn, w in self.parts)
