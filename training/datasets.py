"""Training datasets over the step 0-4 artifacts (folds.csv, crops, landmarks, diffs).

- `FrameDataset`: one crop per item (selim, DFDC 1st place): hardcore blackouts, the
  albumentations pipeline, optionally Self-Blended Images made from REAL crops.
- `PairDataset`: an aligned (real, fake) crop pair per item (NTech, 3rd place), the same
  augmentation for both, mixed up with a Beta-distributed weight that is the label.
- `SequenceDataset`: the crops of one face over several frames, for the 3D model.
- `SequencePairDataset`: an aligned (real clip, fake clip) pair, mixed up as whole clips
  (NTech's sequence model).
- `MosSequenceDataset`: a clip of one face with its video's MOS as the target (VRA's
  realism regressor, `task: mos`); every video equally often, a random clip of it.

Randomness. Every item draws its randomness from one numpy Generator (`get_item(...,
rng=...)` accepts one explicitly), which also seeds the albumentations pipeline
(`transforms.reseed`). Without an explicit one it comes from a per-process stream
seeded by (seed, torch.initial_seed(), DDP rank): torch gives every DataLoader worker
of every epoch its own initial seed, derived from the main process's seed, so a
seeded run is reproducible and no two workers repeat each other's augmentations. The two
items of an SBI pair (`data.sbi_pairs`) are seeded instead by (seed, the pair's nonce,
which their indices carry), so that whichever worker makes each, they share every draw.

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

from preprocessing.artifacts import FOLDS_COLUMNS, CropManifest, FaceBoxes, WorkDir, clip_crop_name, read_png
from preprocessing.crops import recrop

from .augmentations import _blackout, apply_hardcore
from .reencode import output_index, reencode_clip
from .sbi import self_blend, self_blend_pair
from .transforms import IMAGENET_MEAN, IMAGENET_STD, Augmenter

# NTech re-encoded a clip with p=0.5 (their TrackTransform).
REENCODE_CLIP_PROB = 0.5

# Index modes of the balanced datasets (FrameDataset, SequenceDataset): index = row + mode *
# len(rows). A plain index (mode AUTO) turns a REAL row into an SBI fake with probability
# sbi_prob; balanced epochs decide per index instead (FORCE: an SBI fake, NEVER: the row as
# it is), so that their halves stay exactly real and fake. With `data.sbi_pairs` an SBI
# fake comes with its REAL in the next slot (SBI_PAIR_FAKE after SBI_PAIR_REAL): the two
# share a nonce, index = row + len(rows) * (mode + N_INDEX_MODES * nonce), which seeds
# everything random in both items, so they are made from the same draws.
SBI_AUTO, SBI_FORCE, SBI_NEVER, SBI_PAIR_REAL, SBI_PAIR_FAKE = 0, 1, 2, 3, 4
N_INDEX_MODES = 5
PAIR_STREAM = 0x5B1  # a pair's generator: (seed, nonce, PAIR_STREAM), apart from (seed, epoch)
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
    if "mos" in df.columns:  # realism scores, when the metadata has them; empty: not rated
        try:
            df["mos"] = pd.to_numeric(df["mos"].replace("", np.nan), errors="raise").astype(float)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: column 'mos' holds a value that is not a number ({e})") from None
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


def process_stream(owner) -> np.random.Generator:
    """`owner`'s advancing random stream in this process (it holds `seed`, `_rng`, `_rng_key`),
    seeded by its seed, the worker's torch seed and the DDP rank: items drawn from it differ
    every epoch, also with persistent workers, whose torch seed never changes."""
    key = (torch.initial_seed(), _ddp_rank())
    if owner._rng is None or owner._rng_key != key:
        owner._rng = np.random.default_rng([owner.seed, key[0], key[1]])
        owner._rng_key = key
    return owner._rng


# --------------------------------------------------------------------------- base
def dataset_config(size: int | list = 64, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD, **data) -> dict:
    """A validated config holding just what a dataset reads (size, normalize, data{...}):
    for building datasets outside a training run (tests, notebooks)."""
    from .config import SEQUENCE_DATASETS, validate

    network = "DeepFakeClassifierSeq3D" if data.get("dataset") in SEQUENCE_DATASETS else "DeepFakeClassifier"
    margin = data.pop("margin", None)
    return validate({"network": network, "size": size, "margin": margin,
                     "normalize": {"mean": list(mean), "std": list(std)}, "data": data})


def crops_margin(work_dir: str | Path, videos) -> float:
    """The margin step 1 cropped these videos with (their crops.json); one value, or an error."""
    work = WorkDir(work_dir)
    margins = set()
    for v in sorted(set(videos))[:200]:  # step 1 uses one margin per run: a sample is enough
        path = work.crop_manifest(v)
        if path.exists():
            margins.add(round(CropManifest.load(path).margin, 6))
    if len(margins) > 1:
        raise ValueError(f"the crops under {work.root} were made with different margins {sorted(margins)}")
    if not margins:
        raise FileNotFoundError(f"no crops.json under {work.root / 'crops'}: run 1_extract_crops.py first")
    return margins.pop()


class _CropDataset(Dataset):
    """The rows of one split of folds.csv, file access and per-item randomness.

    `cfg` is a validated training config (or `dataset_config(...)`): it gives the input
    geometry and augmentation (`transforms.Augmenter`) and the crop margin. A config
    margin tighter than the crops' (step 1) cuts every crop down to exactly what step 1
    would have cut with that margin (`preprocessing.crops.recrop`, from the video's boxes).
    """

    def __init__(self, work_dir: str | Path, df: pd.DataFrame, fold: int, train: bool, cfg: dict, seed: int = 0):
        missing = [c for c in FOLDS_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"the folds DataFrame lacks columns {missing} (use load_folds)")
        self.work = WorkDir(work_dir)
        self.cfg = cfg
        self.fold, self.train, self.seed = int(fold), bool(train), int(seed)
        self.size = cfg["size"]
        self.mean, self.std = tuple(cfg["normalize"]["mean"]), tuple(cfg["normalize"]["std"])
        self.augment = Augmenter(cfg, self.train)
        self.margin = cfg["margin"]
        self._manifests: dict[str, CropManifest | None] = {}
        self._boxes: dict[str, FaceBoxes] = {}
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
        return np.random.default_rng(int(process_stream(self).integers(2**63)))

    # -- files
    def _crop_path(self, row) -> Path:
        return self.work.root / row.file

    def _landmarks(self, row) -> np.ndarray | None:
        """The 5 MTCNN points of this crop, in the pixels of the crop as read (a config
        margin tighter than step 1's shifts them); a paired fake shares its original's."""
        path = self.work.landmarks(row.original or row.video, int(row.frame), int(row.face))
        try:
            points = np.load(path)
        except (OSError, ValueError):
            return None
        if points.shape != (5, 2):
            return None
        points = points.astype(np.float32)
        manifest = self._manifest(row.video)
        if self.margin is None or manifest is None or abs(manifest.margin - self.margin) < 1e-9:
            return points
        # landmarks are in step-1 crop pixels: shift them into the tighter crop
        boxes = self._video_boxes(manifest.boxes_from)
        box = boxes.frames[int(row.frame)][int(row.face)]
        from preprocessing.crops import crop_box

        outer = crop_box(box, boxes.width, boxes.height, manifest.margin)
        inner = crop_box(box, boxes.width, boxes.height, self.margin)
        return points - np.array([inner[0] - outer[0], inner[1] - outer[1]], np.float32)

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

    def _manifest(self, video: str) -> CropManifest | None:
        if video not in self._manifests:
            path = self.work.crop_manifest(video)
            self._manifests[video] = CropManifest.load(path) if path.exists() else None
        return self._manifests[video]

    def _video_boxes(self, video: str) -> FaceBoxes:
        """Step 0's boxes of `video` (the id a crop's manifest names in boxes_from), cached."""
        if video not in self._boxes:
            self._boxes[video] = FaceBoxes.load(self.work.boxes(video))
        return self._boxes[video]

    def _fit_margin(self, crop: np.ndarray, row, anchor_frame: int | None = None) -> np.ndarray:
        """The crop cut down to the config's margin (see the class doc); as it is when the
        config has none or the same as step 1's."""
        manifest = self._manifest(row.video)
        if self.margin is None or manifest is None or abs(manifest.margin - self.margin) < 1e-9:
            return crop
        boxes = self._video_boxes(manifest.boxes_from)
        box = boxes.frames[int(row.frame if anchor_frame is None else anchor_frame)][int(row.face)]
        return recrop(crop, box, boxes.width, boxes.height, manifest.margin, self.margin)

    def _read_crop(self, j: int) -> np.ndarray:
        row = self.rows.iloc[j]
        return self._fit_margin(read_png(self._crop_path(row)), row)

    def _clip_len(self, video: str) -> int:
        """How many consecutive frames step 1 cropped from each anchor of `video` (clip_len)."""
        manifest = self._manifest(video)
        return manifest.clip_len if manifest is not None else 1

    def _read_clip(self, row, length: int) -> np.ndarray:
        """The anchor's crop and the `length`-1 consecutive frames after it (step 1's
        --clip-len crops, cut with the anchor's box), (length, H, W, 3)."""
        frames = [self._fit_margin(read_png(self.work.crop(row.video, int(row.frame), int(row.face))), row)]
        for j in range(1, length):
            path = self.work.crops_dir(row.video) / clip_crop_name(int(row.frame), int(row.face), j)
            frames.append(self._fit_margin(read_png(path), row))
        return np.stack(frames)

    def _keep_paired_fakes(self, what: str) -> None:
        """Keep the FAKE rows whose original is known (the aligned pairs)."""
        self.rows = self.rows[(self.rows.label == 1) & (self.rows.original != "")].reset_index(drop=True)
        self.labels = self.rows.label.to_numpy(dtype=np.int64)
        if self.rows.empty:
            raise ValueError(f"no paired fakes (a FAKE with its original) {'outside' if self.train else 'in'} "
                             f"fold {self.fold}: {what} needs them")

    @staticmethod
    def _original_of(row) -> pd.Series:
        """The original's crop at a paired fake's frame and face (what `_read_clip` needs)."""
        return pd.Series({"video": row.original, "frame": row.frame, "face": row.face})

    def _src_fps(self, row) -> float:
        """The video's frame rate (step 0's boxes), 30 when unknown."""
        manifest = self._manifest(row.video)
        try:
            boxes = self._video_boxes(manifest.boxes_from if manifest is not None else row.video)
        except (OSError, ValueError, KeyError):
            return 30.0
        return float(boxes.fps or 30.0)


class _BalancedEpochs:
    """Real/fake balanced epochs for datasets with `labels` (one per row)."""

    balanced_epochs = True  # the training sampler draws `epoch_indices`

    labels: np.ndarray
    seed: int

    sbi_pairs = False

    def _uses_sbi(self) -> bool:
        return False

    @property
    def epoch_unit(self) -> int:
        """Items that must stay together in a batch and on one rank: 2 with SBI pairs."""
        return 2 if self._uses_sbi() and self.sbi_pairs else 1

    def decode_index(self, index: int) -> tuple[int, int]:
        """index -> (row, mode): index = row + mode * len(rows), mode SBI_AUTO/FORCE/NEVER,
        or a pair's SBI_PAIR_REAL/FAKE (then plus N_INDEX_MODES * len(rows) * nonce)."""
        n = len(self.labels)
        row, mode = index % n, (index // n) % N_INDEX_MODES
        if index < 0 or (index >= 3 * n and not (mode in (SBI_PAIR_REAL, SBI_PAIR_FAKE) and self.epoch_unit == 2
                                                 and self.labels[row] == 0)):
            raise IndexError(f"index {index} out of range for {n} rows")
        return row, mode

    def pair_nonce(self, index: int) -> int:
        """The nonce a pair's two indices share (see decode_index)."""
        return index // (N_INDEX_MODES * len(self.labels))

    def effective_label(self, index: int) -> int | None:
        """The label an index yields: None for a REAL row in SBI_AUTO mode with SBI on
        (decided at random per item)."""
        row, mode = self.decode_index(index)
        label = int(self.labels[row])
        if mode in (SBI_PAIR_REAL, SBI_PAIR_FAKE):
            return int(mode == SBI_PAIR_FAKE)
        if label == 1 or not self._uses_sbi() or mode == SBI_NEVER:
            return label
        return 1 if mode == SBI_FORCE else None

    def _sbi_decision(self, label: int, mode: int, rng: np.random.Generator) -> bool:
        """Whether this item turns its REAL row into an SBI fake (see decode_index)."""
        return bool(self._uses_sbi() and label == 0 and (
            mode == SBI_FORCE or (mode == SBI_AUTO and rng.random() < self.sbi_prob)))

    def default_epoch_size(self) -> int:
        """Twice the larger class: each row of it once per epoch."""
        return 2 * max(int((self.labels == 0).sum()), int((self.labels == 1).sum()))

    def epoch_indices(self, epoch: int, num_samples: int | None = None, seed: int | None = None) -> list[int]:
        """`num_samples` dataset indices, half REAL and half FAKE (an odd count gets
        one more REAL), shuffled; a pure function of (seed, epoch).

        With SBI (FrameDataset or SequenceDataset, train) a share sbi_prob of the fake half
        is SBI fakes made from REAL rows, and all of it when there are no fake rows; these
        slots carry their decision in the index (SBI_FORCE / SBI_NEVER, see decode_index).
        With SBI pairs each SBI fake comes right after a REAL of the same row and nonce
        (it takes one slot of the real half), and the list is made of units of two
        (`epoch_unit`): the pairs, and the other items two by two, shuffled as units,
        so that a pair never straddles an even batch or two DDP ranks (an odd count's
        last item is alone, at the end).
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
            if self.sbi_pairs:
                reals = _draw(rng, real, n_real)  # each REAL row about equally often, paired or not
                rows, nonces = reals[:n_sbi], rng.integers(2**31, size=n_sbi)
                pairs = np.stack([rows + n * (SBI_PAIR_REAL + N_INDEX_MODES * nonces),
                                  rows + n * (SBI_PAIR_FAKE + N_INDEX_MODES * nonces)], axis=1)
                singles = rng.permutation(np.concatenate([reals[n_sbi:] + SBI_NEVER * n,
                                                          _draw(rng, fake, n_fake - n_sbi)]))
                units = [list(p) for p in pairs] + [list(singles[i:i + 2]) for i in range(0, len(singles), 2)]
                order = sorted(rng.permutation(len(units)), key=lambda k: len(units[k]) == 1)  # a lone item last
                return [int(i) for k in order for i in units[k]]
            reals = _draw(rng, real, n_real) + SBI_NEVER * n
            fakes = np.concatenate([_draw(rng, real, n_sbi) + SBI_FORCE * n, _draw(rng, fake, n_fake - n_sbi)])
        else:
            if len(fake) == 0:
                raise ValueError("no FAKE rows in this split: cannot balance real and fake "
                                 "(data.sbi makes fakes from REAL crops)")
            reals, fakes = _draw(rng, real, n_real), _draw(rng, fake, n_fake)
        return rng.permutation(np.concatenate([reals, fakes])).tolist()


class BalancedSampler(Sampler):
    """Real/fake balanced epochs from `dataset.epoch_indices`, for a DataLoader.

    `num_samples` is the number of items THIS rank draws per epoch (None: the dataset's
    default epoch split over the ranks). Under DDP every rank computes the same epoch of
    num_samples * world_size indices from (seed, epoch) and takes every world_size-th
    one (with SBI pairs, every world_size-th pair) from offset `rank`: the shards are disjoint and equally long, which DDP needs
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
        unit = getattr(dataset, "epoch_unit", 1)
        self.num_samples = math.ceil(int(num_samples) / unit) * unit  # whole pairs on every rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        indices = self.dataset.epoch_indices(self.epoch, self.num_samples * self.world_size, seed=self.seed)
        unit = getattr(self.dataset, "epoch_unit", 1)  # SBI pairs: shard by pairs, not items
        units = [indices[i:i + unit] for i in range(0, len(indices), unit)]
        return iter([i for u in units[self.rank::self.world_size] for i in u])

    def __len__(self) -> int:
        return self.num_samples


# --------------------------------------------------------------------------- frames
class FrameDataset(_BalancedEpochs, _CropDataset):
    """One face crop per item: {"image": (3, h, w), "label", "video", "file"}.

    Train: selim's hardcore blackouts (`augmentations.apply_hardcore`, the same chance for
    a real and a fake crop) when `data.hardcore`, then the config's augmentation;
    validation: the prediction-time resize only. With `data.sbi` (train only) a REAL row
    becomes a Self-Blended fake (label 1) with probability `data.sbi_prob`, so a split of
    REAL videos alone still trains. With `data.sbi_pairs` as well, each SBI fake comes
    with its REAL in the same batch (the authors' recipe, `sbi.self_blend_pair`): the two
    items are made from the same random draws (the pair's nonce), so the REAL (altered
    or not) and the FAKE get the same hardcore blackout and augmentation and differ only
    by the blend.

    Indices run over 3 * len(self), and beyond for pairs (see decode_index); len()
    counts the rows.
    """

    def __init__(self, work_dir: str | Path, df: pd.DataFrame, fold: int, train: bool, cfg: dict, seed: int = 0):
        super().__init__(work_dir, df, fold, train, cfg, seed)
        d = cfg["data"]
        self.hardcore = bool(d["hardcore"]) and self.train
        self.sbi, self.sbi_prob = bool(d["sbi"]) and self.train, float(d["sbi_prob"])
        self.sbi_regions, self.sbi_style = d.get("sbi_regions"), d.get("sbi_style", "official")
        self.sbi_pairs = bool(d.get("sbi_pairs", False))
        self._pair_cache: tuple | None = None  # the last pair made: its two items are adjacent

    def _uses_sbi(self) -> bool:
        return self.sbi

    def get_item(self, index: int, rng: np.random.Generator | None = None) -> dict:
        row_index, mode = self.decode_index(index)
        if mode in (SBI_PAIR_REAL, SBI_PAIR_FAKE):
            return self._pair_item(index, row_index, mode, rng)
        rng = self._item_rng() if rng is None else rng
        row_index, image = self._load_with_substitute(row_index, self._read_crop)
        row = self.rows.iloc[row_index]
        label = int(row.label)
        if self.train:
            landmarks = self._landmarks(row)
            diff = self._crop_diff(row, image.shape[:2])
            if self._sbi_decision(label, mode, rng):
                image, mask = self_blend(image, landmarks, rng, regions=self.sbi_regions, style=self.sbi_style)
                label, diff = 1, np.round(mask * 255).astype(np.uint8)
            if self.hardcore:
                image = apply_hardcore(image, label, landmarks, diff, rng)
            self.augment.reseed(rng)
        return {"image": self.augment([image])[0], "label": torch.tensor(float(label)),
                "video": row.video, "file": row.file}

    def _crop_diff(self, row, shape: tuple[int, int]) -> np.ndarray | None:
        """The row's step-3 diff (`_diff`) cut to its crop's margin when its size is not the crop's."""
        diff = self._diff(row)
        if diff is not None and diff.shape != shape:
            diff = self._fit_margin(diff[..., None], row)[..., 0] if diff.ndim == 2 else diff
        return diff

    def _pair_item(self, index: int, row_index: int, mode: int, rng: np.random.Generator | None) -> dict:
        """One item of an SBI pair (see the class doc). Both items draw from generators
        spawned from one seeded by (seed, nonce, PAIR_STREAM) -- or from `rng`, whose pair
        is then made afresh and not cached -- one each for the blend, the hardcore blackout
        and the augmentation; the blend is made once for the two."""
        nonce = self.pair_nonce(index)
        base = np.random.default_rng([self.seed, nonce, PAIR_STREAM]) if rng is None else rng
        rng_blend, rng_hardcore, rng_augment = base.spawn(3)
        key = (row_index, nonce)
        cached = self._pair_cache if rng is None else None  # an explicit rng's pair is its own
        if cached is None or cached[0] != key:
            cached = (key, *self._make_pair(row_index, rng_blend, rng_hardcore))
            if rng is None:
                self._pair_cache = cached
        _, row, real, fake = cached
        label = int(mode == SBI_PAIR_FAKE) or int(row.label)  # a substitute FAKE row (no REAL loads) is 1
        image = fake if label else real
        self.augment.reseed(rng_augment)
        return {"image": self.augment([image])[0], "label": torch.tensor(float(label)),
                "video": row.video, "file": row.file}

    def _make_pair(self, row_index: int, rng_blend: np.random.Generator,
                   rng_hardcore: np.random.Generator) -> tuple:
        """(row, real, fake) of a pair, both blacked out alike: the hardcore mask is drawn
        once, for the FAKE (a bit mask then leaves its blend visible), and applied to both."""
        row_index, image = self._load_with_substitute(row_index, self._read_crop)
        row = self.rows.iloc[row_index]
        landmarks = self._landmarks(row)
        if int(row.label) == 1:  # no REAL crop of this row loads: a substitute FAKE row, twice
            real = fake = image
            diff = self._crop_diff(row, image.shape[:2])
        else:
            real, fake, mask = self_blend_pair(image, landmarks, rng_blend, regions=self.sbi_regions,
                                               style=self.sbi_style)
            diff = np.round(mask * 255).astype(np.uint8)
        if self.hardcore:
            fake, blackout = apply_hardcore(fake, 1, landmarks, diff, rng_hardcore, return_mask=True)
            real = _blackout(real, blackout) if blackout.any() else real
        return row, real, fake


# --------------------------------------------------------------------------- pairs
class PairDataset(_CropDataset):
    """Aligned (real, fake) crops of the same frame and face (NTech), mixed up.

    Step 1 crops a paired fake with its original's boxes, so the two crops are pixel
    aligned and differ only where the face was manipulated. Both get the SAME random
    augmentation, then image = (1 - t) * real + t * fake (on the normalised tensors, after
    every augmentation, as NTech) with t ~ Beta(mixup_alpha, mixup_alpha), and label t:
    the model learns the manipulation itself, not the person or background.
    mixup_alpha <= 0 gives t in {0, 1} (no mixing).

    With `data.reencode_prob` (NTech: 0.5), the real clip and the fake clip -- the anchor
    and the consecutive frames step 1 cropped after it (--clip-len) -- are each re-encoded
    as a video with the same settings (`reencode.reencode_clip`: frame rate, scale, CRF,
    tune), and the same random frame after the first is taken from both results (a P or B
    frame, as NTech's frames from the middle of a track; the first is the intra frame).
    Without clip crops the anchor alone is encoded, a single intra frame (a warning says
    so once).

    Validation has 2 items per pair: the real (t = 0) and the fake (t = 1).
    """

    def __init__(self, work_dir: str | Path, df: pd.DataFrame, fold: int, train: bool, cfg: dict, seed: int = 0):
        super().__init__(work_dir, df, fold, train, cfg, seed)
        self._keep_paired_fakes("PairDataset")
        self.mixup_alpha = float(cfg["data"]["mixup_alpha"])
        self.reencode_prob = float(cfg["data"]["reencode_prob"]) if self.train else 0.0
        self._warned_single = False

    def __len__(self) -> int:
        return len(self.rows) * (1 if self.train else 2)

    def _read_pair(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        row = self.rows.iloc[j]
        fake = self._fit_margin(read_png(self._crop_path(row)), row)
        real = self._fit_margin(read_png(self.work.crop(row.original, int(row.frame), int(row.face))), row)
        if fake.shape != real.shape:  # not expected from step 1; keep them aligned anyway
            fake = cv2.resize(fake, (real.shape[1], real.shape[0]), interpolation=cv2.INTER_AREA)
        return real, fake

    def _reencoded_pair(self, row, real: np.ndarray, fake: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
        length = min(self._clip_len(row.video), self._clip_len(row.original))
        clips = None
        if length > 1:
            try:
                clips = (self._read_clip(self._original_of(row), length), self._read_clip(row, length))
            except LOAD_ERRORS:
                clips = None
        if clips is None:
            if not self._warned_single:
                warnings.warn("re-encoding single crops (intra frames only): run 1_extract_crops.py with "
                              "--clip-len > 1 to re-encode clips as videos, as NTech")
                self._warned_single = True
            clips = (real[None], fake[None])
        if clips[0].shape != clips[1].shape:
            return real, fake
        seed = int(rng.integers(2**63))
        fps = self._src_fps(row)
        out = [reencode_clip(c, np.random.default_rng(seed), src_fps=fps) for c in clips]
        # NTech took its frames from the middle of the encoded track (indices 9-37 of 50): the
        # stream's first frame is its intra frame, without the P/B-frame artefacts the
        # re-encoding is for. Both take the same later frame (same settings, same length).
        n = min(len(o) for o in out)
        k = int(rng.integers(1, n)) if n > 1 else 0
        return out[0][k], out[1][k]

    def augmented_pair(self, pair_index: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, pd.Series]:
        """(real, fake, row): the two normalised crops after the (shared) re-encoding and
        augmentation, before mixup."""
        j, (real, fake) = self._load_with_substitute(pair_index, self._read_pair)
        row = self.rows.iloc[j]
        if self.train:
            if self.reencode_prob > 0 and rng.random() < self.reencode_prob:
                real, fake = self._reencoded_pair(row, real, fake, rng)
            self.augment.reseed(rng)
        x = self.augment([real, fake])
        return x[0], x[1], row

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
        return {"image": (1.0 - t) * real + t * fake, "label": torch.tensor(float(t)),
                "video": row.video, "file": row.file}


# --------------------------------------------------------------------------- sequences
def clip_stride(fps: float, clip_fps: float) -> int:
    """Frames between a clip's frames: NTech took 15 fps (every 2nd frame at 30 fps);
    clip_fps 0 means consecutive frames."""
    if not clip_fps:
        return 1
    return max(1, int(round(float(fps or 30.0) / clip_fps)))


class SequenceDataset(_BalancedEpochs, _CropDataset):
    """A clip of one face: image (T, 3, h, w), T = `data.seq_len` frames `clip_stride`
    apart (NTech: 7 frames at 15 fps), all cut with the anchor's box (step 1's --clip-len
    crops, which must cover (T - 1) * stride + 1 frames).

    Every frame of the clip gets the same random augmentation, so motion is the only
    difference between them; with `data.reencode_prob` the whole run of consecutive crops
    is first re-encoded as a video (frames drop with the frame rate) and the clip's frames
    are taken from the result. The label is the clip's (the model predicts it per frame).

    Without clip crops (step 1 run with --clip-len 1) the clip is made of the crops of the
    same face at the following detected frames, with a warning: slow motion, not NTech's.

    With `data.sbi` (train only) a REAL clip becomes a Self-Blended fake clip (label 1) with
    probability `data.sbi_prob`: every frame is blended with the same random draws (colour,
    frequency artefact, shift and scale, mask erosion or dilation, edge blur, blend ratio),
    so it does not flicker from frame to frame; the mask follows each frame's face (dlib's
    68 points when the predictor is installed, else the anchor's 5 MTCNN points, the clip
    being cut with the anchor's box). A re-encoded clip is blended before the encoding, as
    a fake video is made before it is compressed. Indices run over 3 * len(self) as
    FrameDataset's (see decode_index).
    """

    sbi, sbi_prob, sbi_regions, sbi_style = False, 0.0, None, "official"  # SequencePairDataset: real fakes only

    def __init__(self, work_dir: str | Path, df: pd.DataFrame, fold: int, train: bool, cfg: dict, seed: int = 0):
        super().__init__(work_dir, df, fold, train, cfg, seed)
        d = cfg["data"]
        self.sbi, self.sbi_prob = bool(d["sbi"]) and self.train, float(d["sbi_prob"])
        self.sbi_regions, self.sbi_style = d.get("sbi_regions"), d.get("sbi_style", "official")
        self._init_sequences(cfg)

    def _uses_sbi(self) -> bool:
        return self.sbi

    def _init_sequences(self, cfg: dict) -> None:
        self.use_clip_crops = False
        d = cfg["data"]
        self.seq_len, self.clip_fps = int(d["seq_len"]), float(d["clip_fps"])
        if self.seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {self.seq_len}")
        self.reencode_prob = float(d["reencode_prob"]) if self.train else 0.0
        self.sequences = self._build_sequences()
        self._check_clip_crops()

    def _check_clip_crops(self) -> None:
        if self.rows.empty:
            return
        row = self.rows.iloc[0]
        have = self._clip_len(row.video)
        self.use_clip_crops = have > 1
        if have == 1:
            warnings.warn(f"no clip crops (step 1 ran with --clip-len 1): clips are made of detected frames; "
                          f"run 1_extract_crops.py --clip-len N --force with N = (seq_len - 1) * fps / clip_fps "
                          f"+ 1 for {self.seq_len} frames at {self.clip_fps or 'every'} fps")
            return
        need = (self.seq_len - 1) * clip_stride(self._src_fps(row), self.clip_fps) + 1
        if have < need:
            raise ValueError(f"step 1 cropped {have} consecutive frames per anchor, the config needs {need} "
                             f"({self.seq_len} frames at {self.clip_fps or 'every frame'} fps of a "
                             f"{self._src_fps(row):g}-fps video): re-run 1_extract_crops.py --clip-len {need} --force")

    def _build_sequences(self) -> list[list[int]]:
        """Fallback: row indices of each anchor's following detected frames, padded to seq_len."""
        sequences: list[list[int]] = [[] for _ in range(len(self.rows))]
        for _, group in self.rows.groupby(["video", "face"], sort=False):
            ordered = group.sort_values("frame").index.to_list()
            for k, anchor in enumerate(ordered):
                seq = ordered[k:k + self.seq_len]
                sequences[anchor] = seq + [seq[-1]] * (self.seq_len - len(seq))
        return sequences

    def _stream_rows(self, row) -> list:
        """The rows whose clips make one item: the row (a pair: its original's, then it)."""
        return [row]

    def _read_frame(self, j: int) -> list[np.ndarray]:
        """Row j's crop in every stream (the fallback without clip crops)."""
        return [self._read_crop(j)]

    def _read_sequence(self, anchor: int, rng: np.random.Generator | None = None,
                       blend: Callable[[list[np.ndarray], object], list[np.ndarray]] | None = None
                       ) -> list[list[np.ndarray]]:
        """One list of seq_len frames per stream; with `rng` (training) every stream is
        re-encoded with the same settings, with probability reencode_prob. `blend(frames,
        row)` (SBI) turns each stream's frames into a fake's: every frame of the run before
        a re-encoding, else the clip's frames."""
        row = self.rows.iloc[anchor]
        if self.use_clip_crops:
            stride = clip_stride(self._src_fps(row), self.clip_fps)
            span = (self.seq_len - 1) * stride + 1
            clips = [self._read_clip(r, span) for r in self._stream_rows(row)]
            if len({c.shape for c in clips}) > 1:
                raise ValueError(f"the clips of {row.file} differ in shape: {[c.shape for c in clips]}")
            if rng is not None and self.reencode_prob > 0 and rng.random() < self.reencode_prob:
                if blend is not None:
                    clips = [np.stack(blend(list(c), row)) for c in clips]
                seed, fps = int(rng.integers(2**63)), self._src_fps(row)
                out = [reencode_clip(c, np.random.default_rng(seed), src_fps=fps) for c in clips]
                return [[o[output_index(j * stride, span, len(o))] for j in range(self.seq_len)] for o in out]
            streams = [[c[j * stride] for j in range(self.seq_len)] for c in clips]
            return [blend(f, row) for f in streams] if blend is not None else streams
        first = self._read_frame(anchor)  # the anchor must load, else a substitute row
        h, w = first[0].shape[:2]
        fit = lambda c: cv2.resize(c, (w, h), interpolation=cv2.INTER_AREA) if c.shape[:2] != (h, w) else c  # noqa: E731
        frames, cache = [], {anchor: [fit(c) for c in first]}
        for j in self.sequences[anchor]:
            if j not in cache:
                try:
                    cache[j] = [fit(c) for c in self._read_frame(j)]
                except LOAD_ERRORS as e:
                    warnings.warn(f"skipping {self.rows.file[j]} in a sequence ({e}); repeating the previous frame")
                    cache[j] = frames[-1]
            frames.append(cache[j])
        streams = [list(stream) for stream in zip(*frames)]
        return [blend(f, row) for f in streams] if blend is not None else streams

    def _blend_clip(self, seed: int) -> Callable[[list[np.ndarray], object], list[np.ndarray]]:
        """SBI for a clip: every frame self-blended with the random draws of one seed."""
        def blend(frames: list[np.ndarray], row) -> list[np.ndarray]:
            landmarks = self._landmarks(row)
            return [self_blend(f, landmarks, np.random.default_rng(seed), regions=self.sbi_regions,
                               style=self.sbi_style)[0]
                    for f in frames]
        return blend

    def get_item(self, index: int, rng: np.random.Generator | None = None) -> dict:
        row_index, mode = self.decode_index(index)
        rng = self._item_rng() if rng is None else rng
        blend = None
        if self.train and self._sbi_decision(int(self.labels[row_index]), mode, rng):
            blend = self._blend_clip(int(rng.integers(2**63)))
        # a substitute row of the other label (no REAL clip loads) is a FAKE: not blended
        anchor, (frames,) = self._load_with_substitute(
            row_index, lambda j: self._read_sequence(j, rng if self.train else None,
                                                     blend if self.labels[j] == 0 else None))
        if self.train:
            self.augment.reseed(rng)
        row = self.rows.iloc[anchor]
        label = torch.tensor(1.0) if blend is not None and self.labels[anchor] == 0 else self._target(row)
        return {"image": self.augment(frames), "label": label, "video": row.video, "file": row.file}

    def _target(self, row) -> torch.Tensor:
        return torch.tensor(float(row.label))


class SequencePairDataset(SequenceDataset):
    """NTech's sequence model trained as their frame models: an aligned (real clip, fake
    clip) pair per item -- the fake's clip and its original's at the same frames, cut with
    the same (the original's) box -- re-encoded with the same settings and given the same
    augmentation (all 2T frames at once), then mixed up as whole clips:
    image = (1 - t) * real + t * fake, t ~ Beta(mixup_alpha, mixup_alpha), label t (every
    frame's target). mixup_alpha <= 0 gives t in {0, 1}. Training only: validate with
    `SequenceDataset` (every clip with its own label).
    """

    balanced_epochs = False  # every row is a pair: nothing to balance

    def __init__(self, work_dir: str | Path, df: pd.DataFrame, fold: int, train: bool, cfg: dict, seed: int = 0):
        _CropDataset.__init__(self, work_dir, df, fold, train, cfg, seed)
        self._keep_paired_fakes("SequencePairDataset")
        self.mixup_alpha = float(cfg["data"]["mixup_alpha"])
        self._init_sequences(cfg)

    def _stream_rows(self, row) -> list:
        return [self._original_of(row), row]

    def _read_frame(self, j: int) -> list[np.ndarray]:
        row = self.rows.iloc[j]
        real = self.work.crop(row.original, int(row.frame), int(row.face))
        return [self._fit_margin(read_png(real), self._original_of(row)), self._read_crop(j)]

    def augmented_pair(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, pd.Series]:
        """(real, fake, row): the two (T, 3, h, w) clips after the shared re-encoding and
        augmentation, before mixup."""
        anchor, (real, fake) = self._load_with_substitute(
            index, lambda j: self._read_sequence(j, rng if self.train else None))
        if self.train:
            self.augment.reseed(rng)
        x = self.augment(real + fake)
        return x[:self.seq_len], x[self.seq_len:], self.rows.iloc[anchor]

    def get_item(self, index: int, rng: np.random.Generator | None = None, t: float | None = None) -> dict:
        """`t` overrides the mixup weight (0: the real clip, 1: the fake)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        rng = self._item_rng() if rng is None else rng
        real, fake, row = self.augmented_pair(index, rng)
        if t is None:
            t = float(rng.beta(self.mixup_alpha, self.mixup_alpha)) if self.mixup_alpha > 0 else float(rng.integers(2))
        return {"image": (1.0 - t) * real + t * fake, "label": torch.tensor(float(t)),
                "video": row.video, "file": row.file}


# --------------------------------------------------------------------------- realism (MOS)
def mos_rows(df: pd.DataFrame, where: str = "folds.csv") -> pd.DataFrame:
    """The rows a MOS model trains on: those of rated videos. A FAKE video without a MOS
    is an error naming it (the realism of a fake is the target); a REAL one without a
    MOS is simply not rated (DFGC rates fakes only) and left out."""
    if "mos" not in df.columns:
        raise ValueError(f"{where} has no 'mos' column: no video of the dataset has a \"mos\" in its "
                         f"metadata.json (tools/import_mos_labels.py reads DFGC's label CSVs), then re-run "
                         f"4_generate_folds.py")
    unrated = df.mos.isna()
    missing = sorted(df.video[unrated & (df.label == 1)].unique())
    if missing:
        raise ValueError(f"{len(missing)} FAKE video(s) have no MOS in {where}, e.g. {missing[:3]}: a realism "
                         f"model needs every fake rated (add \"mos\" to their metadata.json entries)")
    rated = df[~unrated]
    if rated.empty:
        raise ValueError(f"no video in {where} has a MOS")
    return rated.reset_index(drop=True)


class MosSequenceDataset(SequenceDataset):
    """VRA's training item: a run of `data.seq_len` consecutive crops of one face (from a
    random anchor of a random video) and its video's MOS (`label`, a float).

    Epochs draw every rated video equally often (`epoch_indices`): a long video does not
    weigh more than a short one, as in VRA, whose item was a video. No real/fake balance:
    the target is a score, not a class.
    """

    def __init__(self, work_dir: str | Path, df: pd.DataFrame, fold: int, train: bool, cfg: dict, seed: int = 0):
        super().__init__(work_dir, mos_rows(df), fold, train, cfg, seed)
        self.mos = self.rows.mos.to_numpy(dtype=np.float64)
        self._video_rows = [np.asarray(g, dtype=np.int64) for g in self.rows.groupby("video", sort=True).indices.values()]

    def default_epoch_size(self) -> int:
        return len(self._video_rows)

    def epoch_indices(self, epoch: int, num_samples: int | None = None, seed: int | None = None) -> list[int]:
        """`num_samples` indices: videos drawn as evenly as possible, a random anchor of each."""
        num_samples = self.default_epoch_size() if num_samples is None else int(num_samples)
        rng = np.random.default_rng([self.seed if seed is None else int(seed), int(epoch), 7])
        videos = _draw(rng, np.arange(len(self._video_rows)), num_samples)
        return [int(rng.choice(self._video_rows[v])) for v in videos]

    def _target(self, row) -> torch.Tensor:
        return torch.tensor(float(row.mos))
