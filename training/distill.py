"""Distillation of DeepFakeClassifierDistill from a frozen teacher (Heo et al. 2021).

Three pieces the engine calls:

* `load_teacher(path, fold, device)`: the teacher checkpoint, frozen, refused when it was
  trained with another validation fold. A fold-0 teacher trained on folds 1..k-1, so
  distilling a fold-1 student from it shows the student (through the teacher's outputs) the
  very videos it is validated on: the validation scores would be optimistic.
* `Teacher(student_images, student_mean, student_std)`: the teacher's logits (B, 1) on the
  student's batch, converted to the teacher's *own* input size and normalisation (a b7
  teacher trained at 380 px with ImageNet statistics is not fed 384 px images normalised
  some other way).
* `distillation_loss(cls_logit, dist_logit, target, teacher_logit, kind, alpha, criterion,
  dist_criterion)`: L = (1 - alpha) * L(cls_logit, y) + alpha * L(dist_logit, teacher target),
  the target the teacher's probability sigmoid(teacher_logit) ("soft", Heo et al.'s released
  code; `configs/deit_distill.json`) or its decision 1[teacher_logit > 0] ("hard", DeiT's
  hard-label distillation; the default, and the CPU config's).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .losses import bce

DISTILL_KINDS = ("hard", "soft")
# Teacher networks whose eval-mode forward maps a batch of frames (B, 3, H, W) to logits (B, 1).
TEACHER_NETWORKS = ("DeepFakeClassifier", "DeepFakeClassifierDistill")


def _channel_stats(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    stats = torch.as_tensor(values, dtype=torch.float32, device=like.device).view(1, -1, 1, 1)
    if stats.shape[1] != 3:
        raise ValueError(f"expected 3 per-channel values, got {list(values)}")
    return stats


def to_teacher_input(images: torch.Tensor, student_mean: Sequence[float], student_std: Sequence[float],
                     size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Student-normalised square images (B, 3, S, S) -> the teacher's (B, 3, size, size), float32.

    De-normalise to pixels (0..1), resize the whole square with bilinear interpolation
    (antialiased when shrinking, so that a large student image is averaged down as the
    val transform's INTER_AREA does, not aliased), normalise with the teacher's statistics.

    The student's transforms resized the face isotropically (longest side S) and padded it
    with black, centred, to S x S. Scaling that square by size / S scales the face and the
    padding alike, so the result equals an isotropic resize to `size` followed by the same
    centred black padding, up to interpolation (a one-pixel blend at the face/padding edge
    and the rounding of the face's short side). Black padding is 0 in pixel space, so it
    lands on the teacher's -mean/std exactly as its own val transform writes it.
    """
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square frames (B, 3, S, S), got {tuple(images.shape)}")
    x = images.float()
    x = x * _channel_stats(student_std, x) + _channel_stats(student_mean, x)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=size < x.shape[-1])
    return (x - _channel_stats(mean, x)) / _channel_stats(std, x)


class Teacher:
    """A frozen frame model with the input size and normalisation it was trained with.

    Not an nn.Module on purpose: it never becomes part of the student (its weights are not
    saved with it, `model.train()` cannot reach it) and `train()` keeps it in eval mode.
    """

    def __init__(self, model: torch.nn.Module, size: int, mean: Sequence[float], std: Sequence[float],
                 fold: int | None = None, path: str | Path | None = None):
        self.model = model
        self.size, self.mean, self.std = int(size), [float(v) for v in mean], [float(v) for v in std]
        self.fold, self.path = fold, path
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()

    def inputs(self, student_images: torch.Tensor, student_mean: Sequence[float],
               student_std: Sequence[float]) -> torch.Tensor:
        """What the teacher is fed for a student batch (see `to_teacher_input`)."""
        return to_teacher_input(student_images, student_mean, student_std, self.size, self.mean, self.std)

    def __call__(self, student_images: torch.Tensor, student_mean: Sequence[float],
                 student_std: Sequence[float]) -> torch.Tensor:
        """Teacher logits (B, 1), float32, without gradients."""
        self.model.eval()
        with torch.no_grad():
            return self.model(self.inputs(student_images, student_mean, student_std)).float()

    def eval(self) -> "Teacher":
        self.model.eval()
        return self

    def train(self, mode: bool = True) -> "Teacher":
        """Frozen: stays in eval mode (BN statistics and dropout of the trained teacher)."""
        return self.eval()

    def to(self, device) -> "Teacher":
        self.model.to(device)
        return self

    def __repr__(self) -> str:
        return (f"Teacher({type(self.model).__name__}, size={self.size}, mean={self.mean}, std={self.std}, "
                f"fold={self.fold}, path={self.path})")


def _geometry(cfg: dict) -> dict:
    """How a config turns a face crop into its input, apart from the final size."""
    data = cfg.get("data") or {}
    resize = data.get("resize", "isotropic")
    size = cfg["size"]
    geometry = {"resize": resize, "margin": cfg.get("margin")}
    if resize == "shortest" and isinstance(size, int):  # the centre crop's share of the short side
        geometry["crop_fraction"] = round(size / (data.get("short_side") or size), 6)
    return geometry


def check_teacher_geometry(teacher_cfg: dict, student_cfg: dict, path: str | Path = "teacher") -> None:
    """ValueError unless a resize of the student's square input gives the teacher's input.

    `to_teacher_input` only rescales, so the teacher must be square and frame the face as
    the student does: the same `data.resize` (isotropic pad vs short-side crop), the same
    crop `margin` and, for short-side crops, the same crop share of the short side.
    """
    if not isinstance(teacher_cfg["size"], int):
        raise ValueError(f"teacher {path} takes {teacher_cfg['size'][0]}x{teacher_cfg['size'][1]} inputs; "
                         "the student's square inputs cannot be resized into them without distortion")
    teacher, student = _geometry(teacher_cfg), _geometry(student_cfg)
    diff = [f"{k}: teacher {teacher.get(k)!r}, student {student.get(k)!r}"
            for k in sorted(set(teacher) | set(student)) if teacher.get(k) != student.get(k)]
    if diff:
        raise ValueError(f"teacher {path} frames faces differently from the student ({'; '.join(diff)}); "
                         "a resize cannot convert one into the other")


def load_teacher(path: str | Path, fold: int, device="cpu", allow_unknown_fold: bool = False,
                 student_cfg: dict | None = None) -> Teacher:
    """The teacher checkpoint at `path` as a frozen `Teacher` on `device`.

    Refused (ValueError) when the checkpoint records another validation fold than the
    student's `fold` (the teacher trained on the student's validation videos), when it records
    none (unless `allow_unknown_fold`: e.g. a teacher trained on other data altogether; a
    student trained on every fold, `fold` ALL_FOLDS, takes any teacher: it validates on nothing), when
    its network does not map frames to logits (a sequence model), and, given the student's
    config, when its input geometry is not a resize of the student's (`check_teacher_geometry`).
    Checkpoints saved by `training.engine.train` record {"fold": ...} at the top level.
    """
    from .engine import ALL_FOLDS, load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(path)
    teacher_fold = ckpt.get("fold")
    if int(fold) == ALL_FOLDS:  # the student validates on nothing: no teacher can leak into it
        pass
    elif teacher_fold is None:
        if not allow_unknown_fold:
            raise ValueError(f"teacher {path} records no validation fold, so it may have trained on the "
                             f"student's validation fold {fold}; use a teacher trained with fold {fold} "
                             f"held out (or allow_unknown_fold=True for one trained on other data)")
    elif int(teacher_fold) != int(fold):
        raise ValueError(f"teacher {path} was trained with validation fold {teacher_fold}, the student "
                         f"validates on fold {fold}: the teacher trained on the student's validation "
                         f"videos (leak). Use the teacher trained with fold {fold} held out")
    network = ckpt["config"].get("network")
    if network not in TEACHER_NETWORKS:
        raise ValueError(f"teacher {path} is a {network}; a teacher must be a frame model "
                         f"({', '.join(TEACHER_NETWORKS)})")
    del ckpt
    model, cfg = model_from_checkpoint(path, device)
    if student_cfg is not None:
        check_teacher_geometry(cfg, student_cfg, path)
    elif not isinstance(cfg["size"], int):
        raise ValueError(f"teacher {path} takes {cfg['size'][0]}x{cfg['size'][1]} inputs; "
                         "the student's square inputs cannot be resized into them without distortion")
    return Teacher(model, cfg["size"], cfg["normalize"]["mean"], cfg["normalize"]["std"],
                   fold=None if teacher_fold is None else int(teacher_fold), path=path)


def distillation_loss(cls_logit: torch.Tensor, dist_logit: torch.Tensor, target: torch.Tensor,
                      teacher_logit: torch.Tensor, kind: str = "hard", alpha: float = 0.5,
                      criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                      dist_criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                      ) -> torch.Tensor:
    """(1 - alpha) * criterion(cls_logit, target) + alpha * dist_criterion(dist_logit, teacher target).

    kind "hard" (DeiT's hard-label distillation): the teacher target is its decision
    1[teacher_logit > 0]. kind "soft" (Heo et al.'s released code: their distillation head
    learns `sigmoid(teacher_logits)` with the classifier's BCE): the teacher target is
    sigmoid(teacher_logit). With alpha = 0.5 either is 1/2 * L(cls, y) + 1/2 * L(dist, teacher).
    `criterion` (default plain BCE on logits) is the class token's loss, so the config's label
    smoothing applies to the ground-truth term only; `dist_criterion` (default plain BCE) is
    the distillation token's (the engine passes the config's losses on the teacher target,
    balanced by the ground truth when they are balanced, as Heo et al. balanced both terms).
    No gradient flows into the teacher.
    """
    if kind not in DISTILL_KINDS:
        raise ValueError(f"unknown distillation kind {kind!r}; choices: {', '.join(DISTILL_KINDS)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation alpha must be in [0, 1], got {alpha}")
    if teacher_logit.numel() != dist_logit.numel():
        raise ValueError(f"teacher logits {tuple(teacher_logit.shape)} do not match the distillation "
                         f"logits {tuple(dist_logit.shape)}")
    criterion = bce if criterion is None else criterion
    dist_criterion = bce if dist_criterion is None else dist_criterion
    teacher_logit = teacher_logit.detach().float().view_as(dist_logit)
    teacher_target = (teacher_logit > 0).float() if kind == "hard" else torch.sigmoid(teacher_logit)
    return (1 - alpha) * criterion(cls_logit, target) + alpha * dist_criterion(dist_logit, teacher_target)
