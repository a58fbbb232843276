"""Training configs: plain JSON in selim's schema, extended, validated strictly.

selim's keys: network, encoder, size, batches_per_epoch, fp16, optimizer{type,
batch_size, learning_rate, momentum, weight_decay, nesterov, schedule{type, epochs,
params}}, normalize{mean, std}, losses{name: weight}. New keys: task (detect, or mos:
realism regression, DFGC-2023 VRA), pretrained, dropout, drop_path_rate, bn_momentum, grad_clip,
label_smoothing, early_stopping, keep_checkpoint, margin, model{...} (extra model arguments), data{...}
(dataset, input geometry and augmentations), distill{...} (teacher) and inference{...}
(test-time flips). An unknown key anywhere is an error that names it,
so a typo never silently trains the wrong thing.

`size` is an int (a square input, selim) or [height, width] (NTech's 224 x 192).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key (e.g. optimizer.schedule.typ)."""


IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

# Every accepted key with its default; None means "no default, optional".
DEFAULTS: dict = {
    "name": None,                 # checkpoint name; default: the config file's stem
    "task": "detect",             # detect: P(FAKE) | mos: realism regression (VRA), a MOS per video
                                  # | av: audio-visual dissonance (Chugh et al., MDS), P(FAKE) per video
    "network": "DeepFakeClassifier",
    "encoder": "tf_efficientnet_b7.ns_jft_in1k",
    "pretrained": True,           # True: timm downloads (online); "path": local file; False: random init
    "dropout": 0.0,               # head dropout
    "drop_path_rate": 0.0,        # stochastic depth in the encoder (timm drop_path_rate)
    "bn_momentum": None,          # BatchNorm running-average momentum in training; None: PyTorch's 0.1
                                  # (selim's timm B7); NTech's lukemelas B7 had 0.01 (TF's decay 0.99)
    "size": 380,                  # int, or [height, width]
    "margin": None,               # crop margin (fraction of the box side); None: the crops' own (step 1)
    "batches_per_epoch": 2500,
    "fp16": True,                 # autocast (bf16 where supported, else fp16 + GradScaler) on a GPU
    "channels_last": True,        # conv weights (and so activations) in NHWC / NDHWC memory order:
                                  # the same numbers, 1.3-1.5x faster convolutions on a CPU (bench/train)
    "grad_clip": 0.0,             # max grad norm; 0 disables
    "label_smoothing": 0.0,       # selim's: training targets clipped to [eps, 1 - eps]
    "early_stopping": 0,          # stop after this many epochs without a better validation score; 0: off
    "keep_checkpoint": "best",    # what _best.pt holds: best = the epoch with the best validation score
                                  # (selim); last = the final epoch (NTech kept their last snapshot)
    "optimizer": {
        "type": "SGD",            # SGD | AdamW | Adam (L2 weight decay, as Chugh et al.)
        "batch_size": 12,
        "learning_rate": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "nesterov": True,
        "betas": [0.9, 0.999],
        "head_warmup_steps": 0,   # NTech: first train `head` alone (all else frozen, in eval mode)
        "accumulate": 1,          # gradient accumulation: an optimizer step every N batches (VRA: 8)
        "ema_decay": 0.0,         # an exponential moving average of the weights (timm ModelEmaV3; decay
                                  # 1 - n^-3/4 after n optimizer steps, capped here) is what is
                                  # validated, selected and saved; 0: off
        "schedule": {
            "type": "poly",       # poly | cosine | step | constant | plateau (per epoch, on the
                                  # validation score: ReduceLROnPlateau, params factor, patience)
            "epochs": 40,
            "warmup_epochs": 0.0,
            "params": {},         # poly: power; step: step_size (epochs), gamma; cosine: min_lr_ratio
        },
    },
    "normalize": copy.deepcopy(IMAGENET),
    "losses": {"BinaryCrossentropy": 1.0},
    "model": {},                  # extra keyword arguments of the network (seq_len, vit, ...)
    "data": {
        "dataset": "frames",      # frames | pairs | sequences | sequence_pairs (NTech's clips, mixed up)
        "resize": "isotropic",    # isotropic: long side to size, pad (selim) | shortest: short side
                                  # to short_side, then crop size (NTech: random in training, centre else)
        "short_side": None,       # shortest: the short side before the crop (default: min(size))
        "augment": "selim",       # selim: his albumentations pipeline | ntech: flip, crop, AutoAugment
                                  # | none: resize and normalise only (VRA)
        "autoaugment": "original-mstd0.5",  # ntech: timm AutoAugment policy, applied with p=0.5
        "random_erasing": 0.0,    # ntech: timm RandomErasing probability (pixel mode)
        "hardcore": True,         # selim's landmark / hull / bit-mask blackouts
        "sbi": False,             # self-blended fakes from real crops
        "sbi_prob": 0.5,
        "sbi_regions": None,      # {"face": w, "lower": w, "mouth": w}: blended region weights
                                  # (lower/mouth: lip-sync traces, beyond the paper); None: face
        "sbi_style": "official",  # official: the authors' generator (mapooon/SelfBlendedImages); legacy: ours
        "sbi_pairs": False,       # frames: each SBI fake in the batch of its REAL, same augmentation (theirs)
        "train_fakes": True,      # false: the training folds' FAKE videos are left out, SBI fakes of the
                                  # REALs are the only fakes (the SBI paper: FF++ reals alone; sbi_prob then
                                  # has no effect: every FAKE slot is an SBI fake); validation keeps its fakes
        "mixup_alpha": 0.5,       # pairs, sequence_pairs: t ~ Beta(alpha, alpha)
        "reencode_prob": 0.0,     # pairs, sequences: ffmpeg re-encode augmentation of the clip
        "low_res_prob": 0.0,      # selim's pipeline: first shrink the crop's long side to a random
        "low_res_min_side": 40,   # size in [low_res_min_side, size] px (face resolution is a shortcut)
        "seq_len": 8,             # sequences: frames per clip; av_segments: frames per segment
        "av_fake_prob": 0.0,      # av_segments: share of the FAKE half made from REAL segments by
                                  # wrong audio (shifted >= av_min_shift s, or another real video's)
        "av_min_shift": 0.5,
        "av_swap_prob": 0.5,      # av_segments: share of those wrong sounds taken from another REAL video
        "av_jitter": 0.0,         # av_segments: a training segment starts up to this many s off its place
        "av_segment_s": 1.0,      # av_segments: segment length in seconds (the paper: 1)
        "frame_features": False,  # av_segments with a frozen per-frame encoder: compute its features once
        "av_augment": False,      # av_segments: a training segment's crops get one draw, for all its frames, of
                                  # transforms.create_av_train_transforms (flip, affine, brightness/contrast,
                                  # downscale, JPEG, each with its own probability)
        "clip_fps": 0,            # sequences: the clip's frame rate (NTech: 15); 0 = consecutive frames
        "workers": 4,
        "val_batches": 0,         # cap on validation batches; 0 = all
    },
    "distill": {
        "teacher": None,          # path of a trained DeepFakeClassifier checkpoint
        "loss": "hard",           # hard (DeiT): (1-alpha) L(cls, y) + alpha L(dist, teacher > 0)
                                  # soft (Heo et al.'s code): (1-alpha) L(cls, y) + alpha L(dist, sigmoid(teacher))
        "alpha": 0.5,
    },
    "inference": {
        "flip": "none",           # none | half: every other face (or clip) is mirrored (NTech)
    },
}

SEQUENCE_DATASETS = {"sequences", "sequence_pairs"}  # clips for the 3D model and the MOS regressor
DETECT_LOSSES = {"BinaryCrossentropy", "BalancedBinaryCrossentropy"}
MOS_LOSSES = {"RMSE"}
AV_LOSSES = {"MDS"}  # contrastive + the two streams' cross-entropies (the paper's 1:1:1)
LOSSES = DETECT_LOSSES | MOS_LOSSES | AV_LOSSES
NETWORKS = {"DeepFakeClassifier", "DeepFakeClassifierSeq3D", "DeepFakeClassifierDistill", "RealismRegressor",
            "DissonanceNet"}
CLIP_NETWORKS = {"DeepFakeClassifierSeq3D", "RealismRegressor"}  # take (B, T, 3, H, W) clips
CHOICES = {
    "task": {"detect", "mos", "av"},
    "optimizer.type": {"SGD", "AdamW", "Adam"},
    "optimizer.schedule.type": {"poly", "cosine", "step", "constant", "plateau"},
    "data.dataset": {"frames", "pairs", "sequences", "sequence_pairs", "av_segments"},
    "data.resize": {"isotropic", "shortest"},
    "data.augment": {"selim", "ntech", "none"},
    "data.sbi_style": {"official", "legacy"},
    "distill.loss": {"hard", "soft"},
    "inference.flip": {"none", "half"},
    "network": NETWORKS,
}
FREE_FORM = {"model", "optimizer.schedule.params", "losses"}  # keys inside are not fixed


def _merge(defaults: dict, given: dict, path: str) -> dict:
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        full = f"{path}{key}"
        if key.startswith("_") or key == "comment":
            continue  # comments are allowed
        if key not in defaults:
            known = ", ".join(sorted(k for k in defaults))
            raise ConfigError(f"unknown config key '{full}' (known here: {known})")
        if isinstance(defaults[key], dict) and full not in FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{full}' must be an object, got {value!r}")
            out[key] = _merge(defaults[key], value, full + ".")
        else:
            out[key] = value
    return out


def _get(cfg: dict, dotted: str):
    for k in dotted.split("."):
        cfg = cfg[k]
    return cfg


def validate(config: dict) -> dict:
    """Fill in defaults and check every key and value; returns a new dict."""
    if not isinstance(config, dict):
        raise ConfigError("a config must be a JSON object")
    cfg = _merge(DEFAULTS, config, "")
    for dotted, allowed in CHOICES.items():
        if _get(cfg, dotted) not in allowed:
            raise ConfigError(f"config key '{dotted}' is {_get(cfg, dotted)!r}; expected one of {sorted(allowed)}")
    for name, weight in cfg["losses"].items():
        if name not in LOSSES:
            raise ConfigError(f"unknown loss 'losses.{name}'; expected one of {sorted(LOSSES)}")
        if not isinstance(weight, (int, float)):
            raise ConfigError(f"loss weight 'losses.{name}' must be a number")
    size = cfg["size"]
    if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size):
        cfg["size"] = size = size[0] if size[0] == size[1] else list(size)
    elif not isinstance(size, int):
        raise ConfigError(f"config key 'size' must be an integer or [height, width], got {size!r}")
    if min(input_hw(cfg)) < 32:
        raise ConfigError(f"config key 'size' must be an integer >= 32 (or [h, w] >= 32), got {size!r}")
    if cfg["network"] == "DeepFakeClassifierDistill" and not isinstance(size, int):
        raise ConfigError("config key 'size' must be one integer (a square input) for a distill model")
    if cfg["network"] == "DeepFakeClassifierDistill" and size % 16:
        raise ConfigError("config key 'size' must be a multiple of 16 (the ViT patch) for a distill model")
    if cfg["data"]["resize"] == "isotropic" and not isinstance(size, int):
        raise ConfigError("'data.resize': 'isotropic' pads to a square: 'size' must be one integer "
                          "(use 'shortest' for [height, width])")
    if cfg["margin"] is not None and not (isinstance(cfg["margin"], (int, float)) and 0 <= cfg["margin"] <= 2):
        raise ConfigError(f"config key 'margin' must be a number in [0, 2] or null, got {cfg['margin']!r}")
    if not 0 <= cfg["drop_path_rate"] < 1:
        raise ConfigError("config key 'drop_path_rate' must be in [0, 1)")
    if cfg["optimizer"]["head_warmup_steps"] and cfg["network"] == "DissonanceNet":
        raise ConfigError("'optimizer.head_warmup_steps' trains a model's `head` alone; DissonanceNet has none")
    bn = cfg["bn_momentum"]
    if bn is not None and (isinstance(bn, bool) or not isinstance(bn, (int, float)) or not 0 < bn <= 1):
        raise ConfigError(f"config key 'bn_momentum' must be a number in (0, 1] or null, got {bn!r}")
    if not 0 <= cfg["data"]["random_erasing"] <= 1:
        raise ConfigError("config key 'data.random_erasing' must be a probability")
    if cfg["data"]["sbi"] and cfg["data"]["dataset"] not in ("frames", "sequences"):
        raise ConfigError(f"'data.sbi' makes fakes from REAL crops (datasets 'frames' and 'sequences'); "
                          f"'data.dataset': '{cfg['data']['dataset']}' does not use it: turn it off")
    if not isinstance(cfg["data"]["sbi_pairs"], bool):
        raise ConfigError(f"config key 'data.sbi_pairs' must be true or false, got {cfg['data']['sbi_pairs']!r}")
    if cfg["data"]["sbi_pairs"]:
        if not cfg["data"]["sbi"] or cfg["data"]["dataset"] != "frames":
            raise ConfigError("'data.sbi_pairs' pairs each SBI fake with its REAL crop: it needs 'data.sbi' "
                              "and 'data.dataset': 'frames'")
        bs = cfg["optimizer"]["batch_size"]
        if isinstance(bs, int) and not isinstance(bs, bool) and bs > 0 and bs % 2:
            raise ConfigError("'data.sbi_pairs' keeps a REAL and its SBI fake in one batch: "
                              "'optimizer.batch_size' must be even")
        if cfg["data"]["sbi_prob"] == 0:
            raise ConfigError("'data.sbi_pairs' pairs SBI fakes, and 'data.sbi_prob' 0 makes none where there "
                              "are FAKE rows: raise it or turn the pairs off")
    if not isinstance(cfg["data"]["train_fakes"], bool):
        raise ConfigError(f"config key 'data.train_fakes' must be true or false, got {cfg['data']['train_fakes']!r}")
    if not cfg["data"]["train_fakes"] and not cfg["data"]["sbi"]:
        raise ConfigError("'data.train_fakes': false leaves the training FAKE videos out, so SBI must make the "
                          "fakes: it needs 'data.sbi' true")
    if not (isinstance(cfg["data"]["sbi_prob"], (int, float)) and 0 <= cfg["data"]["sbi_prob"] <= 1):
        raise ConfigError("config key 'data.sbi_prob' must be a probability")
    regions = cfg["data"]["sbi_regions"]
    if regions is not None:
        from .sbi import REGIONS

        if not (isinstance(regions, dict) and regions and set(regions) <= set(REGIONS)
                and all(isinstance(v, (int, float)) and v >= 0 for v in regions.values())
                and sum(regions.values()) > 0):
            raise ConfigError(f"config key 'data.sbi_regions' must be null or an object of weights >= 0 "
                              f"(not all 0) over {list(REGIONS)}, got {regions!r}")
    if not isinstance(cfg["channels_last"], bool):
        raise ConfigError(f"config key 'channels_last' must be true or false, got {cfg['channels_last']!r}")
    if not 0 <= cfg["data"]["low_res_prob"] <= 1:
        raise ConfigError("config key 'data.low_res_prob' must be a probability")
    if not isinstance(cfg["data"]["low_res_min_side"], int) or cfg["data"]["low_res_min_side"] < 8:
        raise ConfigError("config key 'data.low_res_min_side' must be an integer >= 8 (pixels)")
    if cfg["data"]["low_res_prob"] > 0 and isinstance(size, int) and cfg["data"]["low_res_min_side"] > size:
        raise ConfigError(f"config key 'data.low_res_min_side' must be at most 'size' ({size})")
    if cfg["data"]["clip_fps"] < 0:
        raise ConfigError("config key 'data.clip_fps' must be >= 0 (0: consecutive frames)")
    ema = cfg["optimizer"]["ema_decay"]
    if not (isinstance(ema, (int, float)) and not isinstance(ema, bool) and 0 <= ema < 1):
        raise ConfigError(f"config key 'optimizer.ema_decay' must be a number in [0, 1) (0: no EMA), got {ema!r}")
    for key in ("batches_per_epoch", "optimizer.batch_size", "optimizer.schedule.epochs", "optimizer.accumulate"):
        v = _get(cfg, key)
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"config key '{key}' must be a positive integer, got {v!r}")
    for key in ("normalize.mean", "normalize.std"):
        v = _get(cfg, key)
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
            raise ConfigError(f"config key '{key}' must be a list of 3 numbers")
    if not 0 <= cfg["label_smoothing"] < 0.5:
        raise ConfigError("config key 'label_smoothing' must be in [0, 0.5)")
    if cfg["network"] == "DeepFakeClassifierDistill" and not cfg["distill"]["teacher"]:
        raise ConfigError("network DeepFakeClassifierDistill needs 'distill.teacher' (a DeepFakeClassifier checkpoint)")
    if not isinstance(cfg["early_stopping"], int) or cfg["early_stopping"] < 0:
        raise ConfigError(f"config key 'early_stopping' must be an integer >= 0 (epochs; 0: off), "
                          f"got {cfg['early_stopping']!r}")
    if cfg["keep_checkpoint"] not in ("best", "last"):
        raise ConfigError(f"config key 'keep_checkpoint' must be 'best' or 'last', got {cfg['keep_checkpoint']!r}")
    if cfg["keep_checkpoint"] == "last" and cfg["early_stopping"]:
        raise ConfigError("config key 'early_stopping' stops after epochs without a better score, and "
                          "'keep_checkpoint': 'last' would then keep the last of those: use one or the other")
    _validate_task(cfg)
    clips = cfg["data"]["dataset"] in SEQUENCE_DATASETS
    if cfg["network"] == "DeepFakeClassifierSeq3D" and not clips:
        raise ConfigError("network DeepFakeClassifierSeq3D needs 'data.dataset': 'sequences' or 'sequence_pairs'")
    if clips and cfg["network"] not in CLIP_NETWORKS:
        raise ConfigError(f"'data.dataset': '{cfg['data']['dataset']}' is for networks {sorted(CLIP_NETWORKS)}")
    return cfg


TASK_NETWORKS = {"mos": "RealismRegressor", "av": "DissonanceNet"}


def _validate_task(cfg: dict) -> None:
    """task mos: the RealismRegressor on clips of one face, an RMSE loss; task av: the
    DissonanceNet on audio-visual segments, the MDS loss; task detect: the rest."""
    task, mos = cfg["task"], cfg["task"] == "mos"
    for t, network in TASK_NETWORKS.items():
        if (task == t) != (cfg["network"] == network):
            raise ConfigError(f"'task': '{t}' goes with network {network} (and only with it); "
                              f"got task {task!r} with network {cfg['network']!r}")
    if (task == "av") != (cfg["data"]["dataset"] == "av_segments"):
        raise ConfigError("'task': 'av' trains on 'data.dataset': 'av_segments' (and only it does)")
    if task == "av" and (cfg["margin"] is None or not isinstance(cfg["size"], int)):
        raise ConfigError("'task': 'av' needs 'margin' (the face tracks' --av-margin, e.g. 0.15) and a square "
                          "'size' (the tracks' crops are square)")
    if not 0 <= cfg["data"]["av_fake_prob"] <= 1 or cfg["data"]["av_min_shift"] < 0:
        raise ConfigError("'data.av_fake_prob' must be a probability and 'data.av_min_shift' >= 0 (seconds)")
    if not 0 <= cfg["data"]["av_swap_prob"] <= 1:
        raise ConfigError("'data.av_swap_prob' must be a probability")
    if cfg["data"]["av_jitter"] < 0:
        raise ConfigError("'data.av_jitter' must be >= 0 (seconds)")
    if not cfg["data"]["av_segment_s"] > 0:
        raise ConfigError("'data.av_segment_s' must be > 0 (seconds)")
    if not isinstance(cfg["data"]["av_augment"], bool):
        raise ConfigError(f"'data.av_augment' must be true or false, got {cfg['data']['av_augment']!r}")
    if cfg["data"]["av_augment"] and cfg["data"]["frame_features"]:
        raise ConfigError("'data.av_augment' changes the crops, 'data.frame_features' encodes them once before "
                          "training: set one of them")
    lips = task == "av" and cfg["encoder"] == "lip_landmarks"  # training.zoo.mds.LIP_ENCODER (no torch here)
    if lips and (cfg["data"]["av_augment"] or cfg["data"]["frame_features"]):
        raise ConfigError("encoder 'lip_landmarks' reads dlib's lip points, fitted once on the crops as they are: "
                          "'data.av_augment' and 'data.frame_features' must be false")
    allowed = {"mos": MOS_LOSSES, "av": AV_LOSSES}.get(task, DETECT_LOSSES)
    wrong = sorted(set(cfg["losses"]) - allowed)
    if wrong:
        raise ConfigError(f"loss 'losses.{wrong[0]}' is not for task {cfg['task']!r}; expected {sorted(allowed)}")
    if mos and cfg["data"]["dataset"] != "sequences":
        raise ConfigError("'task': 'mos' trains on clips: 'data.dataset' must be 'sequences'")
    if mos and (cfg["data"]["sbi"] or cfg["data"]["reencode_prob"] or cfg["label_smoothing"]):
        raise ConfigError("'task': 'mos' has no FAKE label to make or smooth: 'data.sbi', 'data.reencode_prob' "
                          "and 'label_smoothing' must be off")
    p = cfg["optimizer"]["schedule"]["params"]
    if cfg["optimizer"]["schedule"]["type"] == "plateau":
        if not 0 < float(p.get("factor", 0.1)) < 1 or int(p.get("patience", 2)) < 0:
            raise ConfigError("'optimizer.schedule.params' of a plateau schedule: factor in (0, 1), patience >= 0")


def is_clip_model(cfg: dict) -> bool:
    """The network takes clips (B, T, 3, H, W) of `data.seq_len` frames (DissonanceNet: and MFCCs)."""
    return cfg["network"] in CLIP_NETWORKS or cfg["network"] == "DissonanceNet"


def input_hw(cfg: dict) -> tuple[int, int]:
    """The model's input (height, width) from the config's `size`."""
    size = cfg["size"]
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def load_config(path: str | Path) -> dict:
    """Read, validate and name a config file; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON ({e})") from e
    try:
        cfg = validate(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if not cfg["name"]:
        cfg["name"] = path.stem
    return cfg
