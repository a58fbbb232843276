"""Training configs: plain JSON in selim's schema, extended, validated strictly.

selim's keys: network, encoder, size, batches_per_epoch, fp16, optimizer{type,
batch_size, learning_rate, momentum, weight_decay, nesterov, schedule{type, epochs,
params}}, normalize{mean, std}, losses{name: weight}. New keys: pretrained, dropout,
grad_clip, label_smoothing, model{...} (extra model arguments), data{...} (dataset
and augmentations), distill{...} (teacher). An unknown key anywhere is an error that
names it, so a typo never silently trains the wrong thing.
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
    "network": "DeepFakeClassifier",
    "encoder": "tf_efficientnet_b7.ns_jft_in1k",
    "pretrained": True,           # True: timm downloads (online); "path": local file; False: random init
    "dropout": 0.0,
    "size": 380,
    "batches_per_epoch": 2500,
    "fp16": True,                 # autocast (bf16 where supported, else fp16 + GradScaler) on a GPU
    "grad_clip": 0.0,             # max grad norm; 0 disables
    "label_smoothing": 0.0,
    "optimizer": {
        "type": "SGD",            # SGD | AdamW
        "batch_size": 12,
        "learning_rate": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "nesterov": True,
        "betas": [0.9, 0.999],
        "schedule": {
            "type": "poly",       # poly | cosine | step | constant
            "epochs": 40,
            "warmup_epochs": 0.0,
            "params": {},         # poly: power; step: step_size (epochs), gamma; cosine: min_lr_ratio
        },
    },
    "normalize": copy.deepcopy(IMAGENET),
    "losses": {"BinaryCrossentropy": 1.0},
    "model": {},                  # extra keyword arguments of the network (seq_len, vit, ...)
    "data": {
        "dataset": "frames",      # frames | pairs | sequences
        "hardcore": True,         # selim's landmark / hull blackouts
        "sbi": False,             # self-blended fakes from real crops
        "sbi_prob": 0.5,
        "mixup_alpha": 0.5,       # pairs: t ~ Beta(alpha, alpha)
        "reencode_prob": 0.0,     # pairs: ffmpeg re-encode augmentation
        "seq_len": 8,             # sequences
        "workers": 4,
        "val_batches": 0,         # cap on validation batches; 0 = all
    },
    "distill": {
        "teacher": None,          # path of a trained DeepFakeClassifier checkpoint
        "alpha": 0.5,             # loss = (1-alpha)*BCE(cls, y) + alpha*BCE(dist, sigmoid(teacher))
    },
}

LOSSES = {"BinaryCrossentropy", "BalancedBinaryCrossentropy"}
NETWORKS = {"DeepFakeClassifier", "DeepFakeClassifierSeq3D", "DeepFakeClassifierDistill"}
CHOICES = {
    "optimizer.type": {"SGD", "AdamW"},
    "optimizer.schedule.type": {"poly", "cosine", "step", "constant"},
    "data.dataset": {"frames", "pairs", "sequences"},
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
    if not isinstance(cfg["size"], int) or cfg["size"] < 32:
        raise ConfigError(f"config key 'size' must be an integer >= 32, got {cfg['size']!r}")
    if cfg["network"] == "DeepFakeClassifierDistill" and cfg["size"] % 16:
        raise ConfigError(f"config key 'size' must be a multiple of 16 (the ViT patch) for a distill model")
    for key in ("batches_per_epoch", "optimizer.batch_size", "optimizer.schedule.epochs"):
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
    if cfg["network"] == "DeepFakeClassifierSeq3D" and cfg["data"]["dataset"] != "sequences":
        raise ConfigError("network DeepFakeClassifierSeq3D needs 'data.dataset': 'sequences'")
    if cfg["data"]["dataset"] == "sequences" and cfg["network"] != "DeepFakeClassifierSeq3D":
        raise ConfigError("'data.dataset': 'sequences' is for network DeepFakeClassifierSeq3D")
    return cfg


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
