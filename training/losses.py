"""Losses on logits (targets may be soft: mixup t, distillation sigmoid(teacher)), and
the realism regressor's RMSE on MOS values."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth(target: torch.Tensor, eps: float) -> torch.Tensor:
    """selim's label smoothing: targets clipped to [eps, 1 - eps] (0 -> eps, 1 -> 1 - eps;
    a soft mixup target inside that range is left as it is)."""
    return target.clamp(eps, 1 - eps) if eps else target


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float().reshape(-1), target.float().reshape(-1))


def balanced_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """selim's balanced loss, (fake_loss + real_loss) / 2: the mean BCE over the batch's
    fakes (target > 0.5) plus the mean over its reals, halved, so a batch that happens to
    hold more fakes does not tilt the model (DFDC is 5:1 fake). As in his code, a class
    absent from the batch contributes 0 (the loss is then half that class's mean)."""
    return balanced_bce_by(logits, target, target)


def balanced_bce_by(logits: torch.Tensor, target: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """`balanced_bce` against `target`, the classes taken from `classes` (> 0.5: FAKE)
    instead: Heo et al. balance the distillation term, whose target is the teacher's
    probability, by the ground-truth labels of the batch."""
    logits, target = logits.float().reshape(-1), target.float().reshape(-1)
    per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    fake = classes.reshape(-1) > 0.5
    zero = per.sum() * 0  # keeps the graph (and the dtype) when a class is absent
    parts = [per[m].mean() if m.any() else zero for m in (fake, ~fake)]
    return (parts[0] + parts[1]) / 2


def rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """VRA's realism loss: the square root of the mean squared error of the MOS."""
    pred, target = pred.float().reshape(-1), target.float().reshape(-1)
    return torch.sqrt(F.mse_loss(pred, target))


LOSS_FUNCTIONS = {"BinaryCrossentropy": bce, "BalancedBinaryCrossentropy": balanced_bce, "RMSE": rmse}


class WeightedLoss:
    """The config's `losses`: {name: weight}, summed."""

    def __init__(self, losses: dict[str, float], label_smoothing: float = 0.0):
        self.parts = [(LOSS_FUNCTIONS[name], float(w)) for name, w in losses.items()]
        self.label_smoothing = label_smoothing

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = smooth(target, self.label_smoothing)
        return sum(w * fn(logits, target) for fn, w in self.parts)

    def against(self, logits: torch.Tensor, soft_target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The same weighted sum on a soft target (a teacher's probability or decision), not
        smoothed: a balanced loss balances by `labels` (the ground truth), a plain BCE is
        plain. The distillation token's loss, weighted as the class token's."""
        total = 0
        for fn, w in self.parts:
            if fn is balanced_bce:
                total = total + w * balanced_bce_by(logits, soft_target, labels)
            elif fn is bce:
                total = total + w * bce(logits, soft_target)
            else:
                raise ValueError(f"{fn.__name__} is not a classification loss")
        return total
