"""Training datasets over the step 0-4 artifacts (folds.csv, crops, landmarks, diffs).

- `FrameDataset`: one crop per item (selim, DFDC 1st place): hardcore blackouts, the
  albumentations pipeline, optionally Self-Blended Images made from REAL crops.
- `PairDataset`: an aligned (real, fake) crop pair per item (NTech, 3rd place), the same
  augmentation for both, mixed up with a Beta-distributed weight that is the label.
- `SequenceDataset`: the crops of one face over several frames, for the 3D model.

Randomness. Every item draws its randomness from one numpy Generator (`get_item(...,
rng=...)` accepts one explicitly), which also seeds the albumentations pipeline
(`transforms.reseed`). Without an explicit one it comes from a per-process stream
seeded by (seed, torch.initial_seed(), DDP rank): torch gives every DataLoader worker
of every epoch its own initial seed, derived from the main process's seed, so a
seeded run is reproducible and no two workers repeat each other's augmentations.

Balanced epochs. The frame and sequence datasets draw epochs with as many REAL as FAKE
items (`epoch_indices`, `BalancedSampler`), oversampling the smaller class: DFDC has
about five fakes per real video.

A crop that is missing or unreadable never stops an epoch: the item is taken from a
deterministic substitute row (the next readable row with the same label) with a warning.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from preprocessing.artifacts import FOLDS_COLUMNS, WorkDir, read_png

from .augmentations import apply_hardcore
from .reencode import reencode_clip
from .sbi import self_blend
from .transforms import (IMAGENET_MEAN, IMAGENET_STD, create_train_transforms, create_val_transforms,
                         normalize_to_tensor, reseed)

# FrameDataset index modes: index = row + mode * len(rows). A plain index (mode AUTO)
# turns a REAL row into an SBI fake with probability sbi_prob; balanced epochs decide
# per index instead (FORCE: an SBI fake, NEVER: the row as it is), so that their halves
# stay exactly real and fake.
SBI_AUTO, SBI_FORCE, SBI_NEVER = 0, 1, 2
# What a broken crop file raises: read_png's FileNotFoundError / IOError, OpenCV errors.
LOAD_ERRORS = (OSError, ValueError, cv2.error)


def load_folds(work_dir: str | Path) -> pd.DataFrame:
    """folds.csv as a DataFrame; `original` stays "" for unpaired fakes (no NaN)."""
    path = WorkDir(work_dir).folds
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run 4_generate_folds.py first")
    df = pd.read_csv(path, keep_default_na=False, dtype={"video": str, "file": str, "original": str})
    missing = [c for c in FOLDS_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}: re-run 4_generate_folds.py")
    return df.astype({"label": int, "frame": int, "face": int, "fold": int})


def _draw(rng: np.random.Generator, pool: np.ndarray, k: int) -> np.ndarray:
    """k items of `pool`, each used as evenly as possible: concatenated permutations."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    reps = math.ceil(k / len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:k]


def _ddp_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


# --------------------------------------------------------------------------- base
class _CropDataset(Dataset):
    """The rows of one split of folds.csv, file access and per-item randomness."""

    def __init__(self, work_dir: str | Path, df: pd.DataFrame, fold: int, train: bool, size: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, seed: int = 0):
        missing = [c for c in FOLDS_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"the folds DataFrame lacks columns {missing} (use load_folds)")
        self.work = WorkDir(work_dir)
        self.fold, self.train, self.size, self.seed = int(fold), bool(train), int(size), int(seed)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        # Train on every fold but `fold`, validate on `fold` (fold -1: train on all).
        split = df[df.fold != self.fold] if self.train else df[df.fold == self.fold]
        self.rows = split.reset_index(drop=True)
        self.labels = self.rows.label.to_numpy(dtype=np.int64)
        self._rng: np.random.Generator | None = None
        self._rng_key = None
        self._bad_rows: set[int] = set()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.get_item(int(index))

    def get_item(self, index: int, rng: np.random.Generator | None = None) -> dict:
        raise NotImplementedError

    # -- randomness
    def _item_rng(self) -> np.random.Generator:
        """A fresh Generator for one item from this process's stream (see module doc)."""
        key = (torch.initial_seed(), _ddp_rank())
        if self._rng is None or self._rng_key != key:
            self._rng = np.random.default_rng([self.seed, key[0], key[1]])
            self._rng_key = key
        return np.random.default_rng(int(self._rng.integers(2**63)))

    # -- files
    def _crop_path(self, row) -> Path:
        return self.work.root / row.file

    def _landmarks(self, row) -> np.ndarray | None:
        """The 5 MTCNN points of this crop: a paired fake shares its original's."""
        path = self.work.landmarks(row.original or row.video, int(row.frame), int(row.face))
        try:
            points = np.load(path)
        except (OSError, ValueError):
            return None
        return points.astype(np.float32) if points.shape == (5, 2) else None

    def _diff(self, row) -> np.ndarray | None:
        """The step-3 diff of a paired fake, else None."""
        if not (row.label == 1 and row.original):
            return None
        try:
            return read_png(self.work.diff(row.video, int(row.frame), int(row.face)), gray=True)
        except LOAD_ERRORS:
            return None

    def _load_with_substitute(self, row_index: int, load: Callable[[int], object]) -> tuple[int, object]:
        """`load(row)` for the row, or for the next row with the same label whose files
        load (then any row); remembers broken rows so each is reported once."""
        n = len(self.rows)
        order = [(row_index + k) % n for k in range(n)]
        order = ([j for j in order if self.labels[j] == self.labels[row_index]]
                 + [j for j in order if self.labels[j] != self.labels[row_index]])
        for j in order:
            if j in self._bad_rows:
                continue
            try:
                return j, load(j)
            except LOAD_ERRORS as e:
                self._bad_rows.add(j)
                warnings.warn(f"skipping {self.rows.file[j]} ({e}); using a substitute row", stacklevel=3)
        raise RuntimeError(f"no readable crop in {len(self.rows)} rows under {self.work.root}")

    def _read_crop(self, j: int) -> np.ndarray:
        return read_png(self._crop_path(self.rows.iloc[j]))


class _BalancedEpochs:
    """Real/fake balanced epochs for datasets with `labels` (one per row)."""

    labels: np.ndarray
    seed: int

    def _uses_sbi(self) -> bool:
        return False

    def default_epoch_size(self) -> int:
        """Twice the larger class: each row of it once per epoch."""
        return 2 * max(int((self.labels == 0).sum()), int((self.labels == 1).sum()))

    def epoch_indices(self, epoch: int, num_samples: int | None = None, seed: int | None = None) -> list[int]:
        """`num_samples` dataset indices, half REAL and half FAKE (an odd count gets
        one more REAL), shuffled; a pure function of (seed, epoch).

        With SBI (FrameDataset, train) a share sbi_prob of the fake half is SBI fakes
        made from REAL rows, and all of it when there are no fake rows; these slots
        carry their decision in the index (SBI_FORCE / SBI_NEVER, see decode_index).
        """
        num_samples = self.default_epoch_size() if num_samples is None else int(num_samples)
        seed = self.seed if seed is None else int(seed)
        rng = np.random.default_rng([seed, int(epoch)])
        real, fake = np.flatnonzero(self.labels == 0), np.flatnonzero(self.labels == 1)
        n_fake = num_samples // 2
        n_real = num_samples - n_fake
        if len(real) == 0:
            raise ValueError("no REAL rows in this split: cannot balance real and fake")
        n = len(self.labels)
        if self._uses_sbi():
            sbi_share = 1.0 if len(fake) == 0 else self.sbi_prob
            n_sbi = int((rng.random(n_fake) < sbi_share).sum())
            reals = _draw(rng, real, n_real) + SBI_NEVER * n
            fakes = np.concatenate([_draw(rng, real, n_sbi) + SBI_FORCE * n, _draw(rng, fake, n_fake - n_sbi)])
        else:
            if len(fake) == 0:
                raise ValueError("no FAKE rows in this split: cannot balance real and fake "
                                 "(FrameDataset(sbi=True) makes fakes from REAL crops)")
            reals, fakes = _draw(rng, real, n_real), _draw(rng, fake, n_fake)
        return rng.permutation(np.concatenate([reals, fakes])).tolist()


class BalancedSampler(Sampler):
    """Real/fake balanced epochs from `dataset.epoch_indices`, for a DataLoader.

    `num_samples` is the number of items THIS rank draws per epoch (None: the dataset's
    default epoch split over the ranks). Under DDP every rank computes the same epoch of
    num_samples * world_size indices from (seed, epoch) and takes every world_size-th
    one from offset `rank`: the shards are disjoint and equally long, which DDP needs
    (a rank with fewer batches would hang the others in all-reduce). Call
    `set_epoch(epoch)` before each epoch, as with DistributedSampler.
    """

    def __init__(self, dataset, num_samples: int | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.dataset, self.seed, self.rank, self.world_size = dataset, int(seed), int(rank), int(world_size)
        if num_samples is None:
            num_samples = math.ceil(dataset.default_epoch_size() / world_size)
        self.num_samples = int(num_samples)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        indices = self.dataset.epoch_indices(self.epoch, self.num_samples * self.world_size, seed=self.seed)
        return iter(indices[self.rank::self.world_size])

    def __len__(self) -> int:
        return self.num_samples


# --------------------------------------------------------------------------- frames
class FrameDataset(_BalancedEpochs, _CropDataset):
    """One face crop per item: {"image": (3, size, size), "label", "video", "file"}.

    Train: hardcore blackouts (`augmentations.apply_hardcore`, where landmarks or a diff
    exist), then `create_train_transforms`; validation: resize and pad only. With
    `sbi=True` (train only) a REAL row becomes a Self-Blended fake (label 1) with
    probability `sbi_prob`, so a split of REAL videos alone still trains.

    Indices run over 3 * len(self) (see decode_index); len() counts the rows.
    """

    def __init__(self, work_dir: str | Path, df: pd.DataFrame, fold: int, train: bool, size: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 hardcore: bool = True, sbi: bool = False, sbi_prob: float = 0.5, seed: int = 0,
                 hardcore_prob: float = 0.5):
        super().__init__(work_dir, df, fold, train, size, mean, std, seed)
        self.hardcore, self.hardcore_prob = bool(hardcore), float(hardcore_prob)
        self.sbi, self.sbi_prob = bool(sbi), float(sbi_prob)
        self.transforms = create_train_transforms(self.size) if self.train else create_val_transforms(self.size)

    def _uses_sbi(self) -> bool:
        return self.train and self.sbi

    def decode_index(self, index: int) -> tuple[int, int]:
        """index -> (row, mode): index = row + mode * len(rows), mode SBI_AUTO/FORCE/NEVER."""
        n = len(self.rows)
        if not 0 <= index < 3 * n:
            raise IndexError(f"index {index} out of range for {n} rows")
        return index % n, index // n

    def effective_label(self, index: int) -> int | None:
        """The label an index yields: None for a REAL row in SBI_AUTO mode with SBI on
        (decided at random per item)."""
        row, mode = self.decode_index(index)
        label = int(self.labels[row])
        if label == 1 or not self._uses_sbi() or mode == SBI_NEVER:
            return label
        return 1 if mode == SBI_FORCE else None

    def get_item(self, index: int, rng: np.random.Generator | None = None) -> dict:
        row_index, mode = self.decode_index(index)
        rng = self._item_rng() if rng is None else rng
        row_index, image = self._load_with_substitute(row_index, self._read_crop)
        row = self.rows.iloc[row_index]
        label = int(row.label)
        if self.train:
            landmarks = self._landmarks(row)
            diff = self._diff(row)
            make_sbi = self.sbi and label == 0 and (
                mode == SBI_FORCE or (mode == SBI_AUTO and rng.random() < self.sbi_prob))
            if make_sbi:
                image, mask = self_blend(image, landmarks, rng)
                label, diff = 1, np.round(mask * 255).astype(np.uint8)
            if self.hardcore:
                image = apply_hardcore(image, label, landmarks, diff, rng, prob=self.hardcore_prob)
            reseed(self.transforms, rng)
        image = self.transforms(image=image)["image"]
        return {"image": normalize_to_tensor(image, self.mean, self.std),
                "label": torch.tensor(float(label)), "video": row.video, "file": row.file}


# --------------------------------------------------------------------------- pairs
class PairDataset(_CropDataset):
    """Aligned (real, fake) crops of the same frame and face (NTech), mixed up.

    Step 1 crops a paired fake with its original's boxes, so the two crops are pixel
    aligned and differ only where the face was manipulated. Both get the SAME random
    augmentation (albumentations additional target "fake"), then
    image = (1 - t) * real + t * fake with t ~ Beta(mixup_alpha, mixup_alpha) and
    label t: the model learns the manipulation itself, not the person or background.
    mixup_alpha <= 0 gives t in {0, 1} (no mixing).

    With `reencode_prob`, the pair is first re-encoded with H.264 (`reencode_clip`) with
    the same settings for both. Each crop is encoded as its own one-frame clip: in one
    two-frame clip the fake would always be the predicted frame, a label leak.

    Validation has 2 items per pair: the real (t = 0) and the fake (t = 1).
    """

    def __init__(self, work_dir: str | Path, df: pd.DataFrame, fold: int, train: bool, size: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 mixup_alpha: float = 0.5, reencode_prob: float = 0.0, seed: int = 0):
        super().__init__(work_dir, df, fold, train, size, mean, std, seed)
        self.rows = self.rows[(self.rows.label == 1) & (self.rows.original != "")].reset_index(drop=True)
        self.labels = self.rows.label.to_numpy(dtype=np.int64)
        if self.rows.empty:
            raise ValueError(f"no paired fakes (a FAKE with its original) {'outside' if self.train else 'in'} "
                             f"fold {self.fold}: PairDataset needs them")
        self.mixup_alpha, self.reencode_prob = float(mixup_alpha), float(reencode_prob)
        make = create_train_transforms if self.train else create_val_transforms
        self.transforms = make(self.size, additional_targets={"fake": "image"})

    def __len__(self) -> int:
        return len(self.rows) * (1 if self.train else 2)

    def _read_pair(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.rows.iloc[j]
        fake = read_png(self._crop_path(row))
        real = read_png(self.work.crop(row.original, int(row.frame), int(row.face)))
        if fake.shape != real.shape:  # not expected from step 1; keep them aligned anyway
            fake = cv2.resize(fake, (real.shape[1], real.shape[0]), interpolation=cv2.INTER_AREA)
        return real, fake

    def augmented_pair(self, pair_index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, pd.Series]:
        """(real, fake, row): the two uint8 (size, size, 3) crops after the (shared)
        re-encoding and augmentation, before mixup."""
        j, (real, fake) = self._load_with_substitute(pair_index, self._read_pair)
        if self.train:
            if self.reencode_prob > 0 and rng.random() < self.reencode_prob:
                clip_seed = int(rng.integers(2**63))
                real = reencode_clip(real[None], np.random.default_rng(clip_seed))[0]
                fake = reencode_clip(fake[None], np.random.default_rng(clip_seed))[0]
            reseed(self.transforms, rng)
        out = self.transforms(image=real, fake=fake)
        return out["image"], out["fake"], self.rows.iloc[j]

    def get_item(self, index: int, rng: np.random.Generator | None = None, t: float | None = None) -> dict:
        """`t` overrides the mixup weight (0: the real crop, 1: the fake)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        rng = self._item_rng() if rng is None else rng
        pair_index = index if self.train else index // 2
        real, fake, row = self.augmented_pair(pair_index, rng)
        if t is None:
            if not self.train:
                t = float(index % 2)
            elif self.mixup_alpha > 0:
                t = float(rng.beta(self.mixup_alpha, self.mixup_alpha))
            else:
                t = float(rng.integers(2))
        real_t = normalize_to_tensor(real, self.mean, self.std)
        fake_t = normalize_to_tensor(fake, self.mean, self.std)
        return {"image": (1.0 - t) * real_t + t * fake_t, "label": torch.tensor(float(t)),
                "video": row.video, "file": row.file}


# --------------------------------------------------------------------------- sequences
class SequenceDataset(_BalancedEpochs, _CropDataset):
    """The crops of one face over `seq_len` frames: image (T, 3, size, size).

    Each row is an anchor; the sequence is its T consecutive frames when step 1 ran with
    --clip-len >= T, else the crops of the same video and face index at the anchor's
    frame and the following detected frames (0, 10, 20, ...), the last repeated up to T. Frames are resized to the anchor
    crop's size (the boxes move a little between frames) and then get the same random
    augmentation (albumentations' `images` target), so motion is the only difference.
    """

    def __init__(self, work_dir: str | Path, df: pd.DataFrame, fold: int, train: bool, size: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 seq_len: int = 8, seed: int = 0):
        super().__init__(work_dir, df, fold, train, size, mean, std, seed)
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.seq_len = int(seq_len)
        self.transforms = create_train_transforms(self.size) if self.train else create_val_transforms(self.size)
        self.sequences = self._build_sequences()

    def _build_sequences(self) -> list[list[int]]:
        """Row indices of each anchor's sequence, padded to seq_len with the last one."""
        sequences: list[list[int]] = [[] for _ in range(len(self.rows))]
        for _, group in self.rows.groupby(["video", "face"], sort=False):
            ordered = group.sort_values("frame").index.to_list()
            for k, anchor in enumerate(ordered):
                seq = ordered[k:k + self.seq_len]
                sequences[anchor] = seq + [seq[-1]] * (self.seq_len - len(seq))
        return sequences

    def _clip_paths(self, anchor: int) -> list[Path] | None:
        """The anchor's consecutive frames f+1 .. f+T-1, when step 1 ran with --clip-len >= T
        (NTech's setting: the temporal convs see real frame-to-frame motion)."""
        row = self.rows.iloc[anchor]
        paths = [self.work.crop(row.video, int(row.frame) + j, int(row.face)) for j in range(1, self.seq_len)]
        return paths if all(p.exists() for p in paths) else None

    def _read_sequence(self, anchor: int) -> list[np.ndarray]:
        frames = [self._read_crop(anchor)]  # the anchor must load, else a substitute row
        h, w = frames[0].shape[:2]
        clip = self._clip_paths(anchor)
        if clip is not None:
            for path in clip:
                crop = read_png(path)
                frames.append(cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
                              if crop.shape[:2] != (h, w) else crop)
            return frames
        cache = {anchor: frames[0]}
        for j in self.sequences[anchor][1:]:
            if j not in cache:
                try:
                    crop = self._read_crop(j)
                    cache[j] = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA) if crop.shape[:2] != (h, w) else crop
                except LOAD_ERRORS as e:
                    warnings.warn(f"skipping {self.rows.file[j]} in a sequence ({e}); repeating the previous frame")
                    cache[j] = frames[-1]
            frames.append(cache[j])
        return frames

    def get_item(self, index: int, rng: np.random.Generator | None = None) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} rows")
        rng = self._item_rng() if rng is None else rng
        anchor, frames = self._load_with_substitute(index, self._read_sequence)
        if self.train:
            reseed(self.transforms, rng)
        images = self.transforms(images=np.stack(frames))["images"]
        row = self.rows.iloc[anchor]
        return {"image": normalize_to_tensor(images, self.mean, self.std),
                "label": torch.tensor(float(row.label)), "video": row.video, "file": row.file}
