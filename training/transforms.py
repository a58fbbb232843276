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


# Training resizes with the filter prediction uses (selim drew one of three per crop:
# (AREA, CUBIC), (AREA, LINEAR), (LINEAR, LINEAR), and predicted with (AREA, CUBIC) only,
# so two thirds of his training crops were resampled unlike any test crop).
RESIZE_INTERPOLATION = (cv2.INTER_AREA, cv2.INTER_CUBIC)


def create_train_transforms(size: int, additional_targets: dict[str, str] | None = None,
                            low_res_prob: float = 0.0, low_res_min_side: int = 40) -> A.Compose:
    """selim's training augmentation. `additional_targets` (e.g. {"fake": "image"})
    applies the very same random parameters to more images: aligned real/fake pairs.
    `low_res_prob` (beyond selim, 0 = his pipeline): first shrink the crop so its long side
    is a random size in [low_res_min_side, size], for REAL and FAKE alike, so that a blurry,
    low-resolution face stops telling the classes apart."""
    low_res = []
    if low_res_prob > 0:
        sides = list(range(low_res_min_side, size + 1, max(1, (size - low_res_min_side) // 16)))
        low_res = [A.LongestMaxSize(max_size=sides, interpolation=cv2.INTER_AREA, p=low_res_prob)]
    return A.Compose([
        *low_res,
        A.ImageCompression(quality_range=(60, 100), p=0.5),
        # selim: GaussNoise(var_limit=(10, 50)) on 0..255, i.e. std 3.2..7.1 grey levels.
        A.GaussNoise(std_range=(np.sqrt(10) / 255, np.sqrt(50) / 255), p=0.1),
        A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.5, 1.0), p=0.05),
        A.HorizontalFlip(p=0.5),
        *_resize_and_pad(size, [RESIZE_INTERPOLATION]),
        A.OneOf([A.RandomBrightnessContrast(), A.FancyPCA(), A.HueSaturationValue()], p=0.7),
        A.ToGray(p=0.2),
        # ShiftScaleRotate(shift_limit=0.1, scale_limit=0.2, rotate_limit=10) in 2.x terms; its
        # one scale for both axes is keep_ratio (Affine's default draws x and y apart).
        A.Affine(translate_percent=(-0.1, 0.1), scale=(0.8, 1.2), rotate=(-10, 10), keep_ratio=True,
                 border_mode=cv2.BORDER_CONSTANT, fill=0, p=0.5),
    ], additional_targets=additional_targets)


def create_av_train_transforms() -> A.Compose:
    """The dissonance model's training augmentation (`data.av_augment`, beyond the paper),
    for the frames of one segment together (one draw for all of them, so that it adds no
    motion): a horizontal flip (p 0.5; speech is as well timed in a mirror), a small shift
    and zoom of the crop (p 0.5; other detectors and margins put the mouth elsewhere),
    brightness and contrast (p 0.5; the motion stream's frame differences scale with them),
    and a loss of detail by downscaling or JPEG (p 0.3 each; talking heads come at 360x288
    as well as at 1080p). About 3% of segments come out unchanged."""
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(translate_percent=(-0.05, 0.05), scale=(0.9, 1.1), keep_ratio=True,
                 border_mode=cv2.BORDER_REFLECT_101, p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.Downscale(scale_range=(0.3, 0.7), interpolation_pair={"downscale": cv2.INTER_AREA,
                                                                 "upscale": cv2.INTER_LINEAR}, p=0.3),
        A.ImageCompression(quality_range=(40, 95), p=0.3),
    ])


def create_val_transforms(size: int, additional_targets: dict[str, str] | None = None) -> A.Compose:
    """Deterministic: the inference-time resize and pad only."""
    return A.Compose(_resize_and_pad(size, [RESIZE_INTERPOLATION]), additional_targets=additional_targets)


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


# --------------------------------------------------------------------------- config-driven pipelines
class Augmenter:
    """The augmentation of one config, for one image or several that must get the SAME
    random parameters (an aligned real/fake pair, the frames of a clip, or both).

        aug = Augmenter(cfg, train=True)
        aug.reseed(rng)                        # all randomness of the next call from rng
        tensors = aug(images)                  # list of (H, W, 3) uint8 -> (N, 3, h, w) float

    `data.augment`:
      selim: his albumentations pipeline (compression, noise, blur, flip, isotropic resize
             and pad, colour, grey, affine); validation: the isotropic resize and pad.
      ntech: NTech-Lab's: short side to `data.short_side`, pad to the input if smaller,
             horizontal flip, random crop of [h, w], timm AutoAugment (`data.autoaugment`,
             p=0.5) and, after normalisation, RandomErasing (`data.random_erasing`, pixel
             mode); validation and prediction: the same resize and a centre crop.
      none:  no augmentation (VRA's realism regressor): training inputs are made exactly
             as validation's.
    """

    def __init__(self, cfg: dict, train: bool):
        from .config import input_hw

        d = cfg["data"]
        self.train, self.kind = bool(train), d["augment"]
        self.mean, self.std = cfg["normalize"]["mean"], cfg["normalize"]["std"]
        self.height, self.width = input_hw(cfg)
        self.erasing = float(d["random_erasing"]) if self.train else 0.0
        self.autoaugment = None
        self._seed = 0
        if d["resize"] == "isotropic":
            if self.kind == "selim" and self.train:
                self.geometry = create_train_transforms(self.height, low_res_prob=d["low_res_prob"],
                                                        low_res_min_side=d["low_res_min_side"])
            else:
                self.geometry = create_val_transforms(self.height)
        else:
            short = int(d["short_side"] or min(self.height, self.width))
            # NTech's PadIfNeeded kept albumentations' default, mirror padding (REFLECT_101),
            # in training and in prediction (only the 1.5x crop model, short side 192, pads)
            steps = [A.SmallestMaxSize(max_size=short, interpolation=cv2.INTER_LINEAR),
                     A.PadIfNeeded(min_height=self.height, min_width=self.width,
                                   border_mode=cv2.BORDER_REFLECT_101)]
            if self.train and self.kind != "none":
                steps += [A.HorizontalFlip(p=0.5), A.RandomCrop(height=self.height, width=self.width)]
            else:
                steps += [A.CenterCrop(height=self.height, width=self.width)]
            self.geometry = A.Compose(steps)
        if self.train and self.kind == "ntech" and d["autoaugment"]:
            from timm.data.auto_augment import auto_augment_transform

            fill = tuple(int(round(255 * m)) for m in self.mean)
            self.autoaugment = auto_augment_transform(
                d["autoaugment"], {"translate_const": int(min(self.height, self.width) * 0.45), "img_mean": fill})

    def reseed(self, rng: np.random.Generator) -> None:
        reseed(self.geometry, rng)
        self._seed = int(rng.integers(2**63))

    def images(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The augmented uint8 images, before normalisation (same parameters for all)."""
        images = [np.ascontiguousarray(im) for im in images]
        if len(images) == 1:
            out = [self.geometry(image=images[0])["image"]]
        else:
            shapes = {im.shape for im in images}
            if len(shapes) != 1:
                raise ValueError(f"images augmented together must have one size, got {sorted(shapes)}")
            out = list(self.geometry(images=np.stack(images))["images"])
        if self.autoaugment is not None:
            import random

            from PIL import Image

            state = random.getstate()
            try:
                applied = []
                for im in out:  # timm's AutoAugment draws from `random`: replay it for every image
                    random.seed(self._seed)
                    if random.random() < 0.5:
                        im = np.asarray(self.autoaugment(Image.fromarray(im)))
                    applied.append(im)
                out = applied
            finally:
                random.setstate(state)
        return out

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        x = normalize_to_tensor(np.stack(self.images(images)), self.mean, self.std)
        if self.erasing > 0:
            x = random_erase(x, np.random.default_rng(self._seed), self.erasing)
        return x


def random_erase(x: torch.Tensor, rng: np.random.Generator, probability: float, min_area: float = 0.02,
                 max_area: float = 1 / 3, min_aspect: float = 0.3, attempts: int = 10) -> torch.Tensor:
    """timm's RandomErasing in 'pixel' mode (NTech's re model), the same rectangle and the
    same noise on every image of `x` (N, 3, H, W): with `probability`, one rectangle of
    2%..33% of the area, aspect in [0.3, 1/0.3] (log-uniform), filled with N(0, 1) noise
    in normalised units."""
    if rng.random() >= probability:
        return x
    _, c, h, w = x.shape
    log_ratio = (np.log(min_aspect), np.log(1 / min_aspect))
    for _ in range(attempts):
        area = rng.uniform(min_area, max_area) * h * w
        aspect = np.exp(rng.uniform(*log_ratio))
        eh, ew = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < eh < h and 0 < ew < w:
            top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            noise = torch.from_numpy(rng.standard_normal((c, eh, ew)).astype(np.float32))
            x = x.clone()
            x[:, :, top:top + eh, left:left + ew] = noise
            return x
    return x
