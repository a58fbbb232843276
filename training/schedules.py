"""Learning-rate schedules with linear warm-up, stepped once per iteration; `plateau`
steps once per epoch on the validation score."""
from __future__ import annotations

import math

import torch


def lr_lambda(kind: str, total_steps: int, warmup_steps: int, steps_per_epoch: int, params: dict):
    """A function step -> multiplier of the base learning rate."""
    power = float(params.get("power", 0.9))
    min_ratio = float(params.get("min_lr_ratio", 0.0))
    step_size = int(params.get("step_size", 10)) * steps_per_epoch
    gamma = float(params.get("gamma", 0.1))

    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if kind == "poly":
            return (1 - t) ** power
        if kind == "cosine":
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        if kind == "step":
            return gamma ** ((step - warmup_steps) // max(1, step_size))
        return 1.0

    return f


def create_scheduler(optimizer: torch.optim.Optimizer, schedule: dict, steps_per_epoch: int):
    """A per-step LambdaLR, or for `plateau` a per-epoch ReduceLROnPlateau on the validation
    score (VRA: factor 0.1, patience 2), which the training loop steps with that score."""
    if schedule["type"] == "plateau":
        p = schedule.get("params", {})
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=float(p.get("factor", 0.1)),
                                                          patience=int(p.get("patience", 2)))
    epochs = int(schedule["epochs"])
    total = epochs * steps_per_epoch
    warmup = int(round(float(schedule.get("warmup_epochs", 0.0)) * steps_per_epoch))
    fn = lr_lambda(schedule["type"], total, warmup, steps_per_epoch, schedule.get("params", {}))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
