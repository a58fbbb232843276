"""Image transforms for training and validation (albumentations 2.x).

The train pipeline is selim's (DFDC 1st place) written for albumentations 2.x:
ShiftScaleRotate became `Affine`, `ImageCompression` takes `quality_range`,
`GaussNoise` a standard deviation as a fraction of 255 (`std_range`).

Faces are resized *isotropically* (longest side to `size`, aspect kept) and padded
with black to a square, never stretched: a stretched face would teach the model
the aspect ratio of the detector's box rather than the face.

albumentations 2.x seeds every transform of a Compose with the *same* seed when
`Compose(seed=...)` or `set_random_seed` is used, which makes transforms with equal
probabilities fire together (a flip always with a compression...). `reseed`
gives each transform its own seed drawn from a numpy Generator instead.
"""
from __future__ import annotations

from typing import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.core.composition import BaseCompose
from albumentations.core.transforms_interface import BasicTransform, DualTransform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def isotropic_resize(img: np.ndarray, size: int, interpolation_down: int = cv2.INTER_AREA,
                     interpolation_up: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Resize so that the longest side is `size`, keeping the aspect ratio.

    INTER_AREA is the right filter to shrink (it averages, no aliasing), a cubic one to
    enlarge; the train pipeline varies them so that the model does not learn one
    resampling filter's fingerprint.
    """
    h, w = img.shape[:2]
    if max(h, w) == size:
        return img
    scale = size / max(h, w)
    if w >= h:
        new_w, new_h = size, max(1, int(round(h * scale)))
    else:
        new_w, new_h = max(1, int(round(w * scale))), size
    interpolation = interpolation_up if scale > 1 else interpolation_down
    return cv2.resize(img, (new_w, new_h), interpolation=interpolation)


class IsotropicResize(DualTransform):
    """albumentations wrapper of `isotropic_resize` (masks use nearest neighbour)."""

    def __init__(self, max_side: int, interpolation_down: int = cv2.INTER_AREA,
                 interpolation_up: int = cv2.INTER_CUBIC, p: float = 1.0):
        super().__init__(p=p)
        self.max_side = int(max_side)
        self.interpolation_down = interpolation_down
        self.interpolation_up = interpolation_up

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        return isotropic_resize(img, self.max_side, self.interpolation_down, self.interpolation_up)

    def apply_to_mask(self, mask: np.ndarray, **params) -> np.ndarray:
        return isotropic_resize(mask, self.max_side, cv2.INTER_NEAREST, cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_side", "interpolation_down", "interpolation_up")


def _resize_and_pad(size: int, interpolations: Sequence[tuple[int, int]]) -> list:
    resize = [IsotropicResize(size, down, up) for down, up in interpolations]
    return [A.OneOf(resize, p=1.0) if len(resize) > 1 else resize[0],
            A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_CONSTANT, fill=0)]


def create_train_transforms(size: int, additional_targets: dict[str, str] | None = None) -> A.Compose:
    """selim's training augmentation. `additional_targets` (e.g. {"fake": "image"})
    applies the very same random parameters to more images: aligned real/fake pairs."""
    return A.Compose([
        A.ImageCompression(quality_range=(60, 100), p=0.5),
        # selim: GaussNoise(var_limit=(10, 50)) on 0..255, i.e. std 3.2..7.1 grey levels.
        A.GaussNoise(std_range=(np.sqrt(10) / 255, np.sqrt(50) / 255), p=0.1),
        A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.5, 1.0), p=0.05),
        A.HorizontalFlip(p=0.5),
        *_resize_and_pad(size, [(cv2.INTER_AREA, cv2.INTER_CUBIC),
                                (cv2.INTER_AREA, cv2.INTER_LINEAR),
                                (cv2.INTER_LINEAR, cv2.INTER_LINEAR)]),
        A.OneOf([A.RandomBrightnessContrast(), A.FancyPCA(), A.HueSaturationValue()], p=0.7),
        A.ToGray(p=0.2),
        # ShiftScaleRotate(shift_limit=0.1, scale_limit=0.2, rotate_limit=10) in 2.x terms.
        A.Affine(translate_percent=(-0.1, 0.1), scale=(0.8, 1.2), rotate=(-10, 10),
                 border_mode=cv2.BORDER_CONSTANT, fill=0, p=0.5),
    ], additional_targets=additional_targets)


def create_val_transforms(size: int, additional_targets: dict[str, str] | None = None) -> A.Compose:
    """Deterministic: the inference-time resize and pad only."""
    return A.Compose(_resize_and_pad(size, [(cv2.INTER_AREA, cv2.INTER_CUBIC)]),
                     additional_targets=additional_targets)


def reseed(transform: BaseCompose | BasicTransform, rng: np.random.Generator) -> None:
    """Give every transform in the tree its own seed drawn from `rng` (see module doc),
    which makes one call of the pipeline a deterministic function of `rng`."""
    transform.set_random_seed(int(rng.integers(2**63)))
    if isinstance(transform, BaseCompose):
        for child in transform.transforms:
            reseed(child, rng)


def normalize_to_tensor(img: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
                        std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> float32 (3, H, W), or a stack (T, H, W, 3) -> (T, 3, H, W);
    `mean` and `std` are per channel in 0..1 units (ImageNet by default)."""
    if img.ndim not in (3, 4) or img.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3) or (T, H, W, 3) RGB, got {img.shape}")
    x = torch.from_numpy(np.ascontiguousarray(img)).float().div_(255.0)
    x = (x - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(std, dtype=torch.float32)
    return x.movedim(-1, -3).contiguous()
