"""Published DFDC weights as this project's checkpoints.

selim (1st place) released his final models as files holding {"state_dict", "epoch",
"bce_best"}: `encoder.*` is timm's EfficientNet with its ImageNet `classifier` still in
it, `fc.weight`/`fc.bias` his head, every key possibly prefixed `module.` (saved from
DataParallel). His DeepFakeClassifier is encoder.forward_features -> average pool ->
dropout -> fc, which is this project's DeepFakeClassifier with `fc` named `head`: the
weights map one to one. A plain state dict in this project's own names also imports.

NTech-Lab (3rd place) released fp16 state dicts of lukemelas' EfficientNet-PyTorch B7
(`_conv_stem`, `_blocks.N._expand_conv`, ..., `_fc`): the same tensors as timm's
tf_efficientnet_b7 in the same order, so they map by position, every shape checked; the
config is configs/b7_ntech_large_crop.json (or b7_ntech_seq.json when the expand convs
are their 3D SeqExpandConv; `--config` picks b7_ntech_re.json). Their 3D convs pad time
with zeros, this project's with the edge frame (README, departures): an imported
sequence model differs from theirs at a clip's first and last frame.

    python tools/import_weights.py final_111_DeepFakeClassifier_tf_efficientnet_b7_ns_0_36 OUT.pt
    python 6_predict.py --models weights/selim/original/final_111_DeepFakeClassifier_tf_efficientnet_b7_ns_0_36 ...  # on the fly

The checkpoint records where the file came from (path or URL, sha256, format, his epoch
and score) and the preprocessing the weights expect, which configs/b7.json already is:
380 px, ImageNet normalisation, margin 1/3 of the box, isotropic resize and zero pad.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch

# his encoder_params names -> timm 1.x names (the same Noisy Student weights)
SELIM_ENCODERS = {f"tf_efficientnet_b{i}_ns": f"tf_efficientnet_b{i}.ns_jft_in1k" for i in range(0, 8)}
SELIM_ENCODERS.update({f"{k}_0{d}d": v for k, v in list(SELIM_ENCODERS.items()) for d in (3, 4)})
SELIM_ENCODERS.update({"se50": "seresnext50_32x4d", "sk50": "skresnext50_32x4d", "dpn92": "dpn92", "dpn131": "dpn131"})


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def encoder_from_name(name: str) -> str | None:
    """'final_111_DeepFakeClassifier_tf_efficientnet_b7_ns_0_36' -> 'tf_efficientnet_b7.ns_jft_in1k'."""
    m = re.search(r"DeepFakeClassifier_(.+?)_\d+(?:_\d+)?$", Path(name).name.removesuffix(".pt").removesuffix(".pth"))
    return SELIM_ENCODERS.get(m.group(1), m.group(1)) if m else None


def is_foreign(ckpt) -> bool:
    """A dict of tensors or {"state_dict": ...} without this project's config."""
    return isinstance(ckpt, dict) and "config" not in ckpt


def _state_dict(raw) -> dict:
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("not a state dict of tensors, nor a dict holding one under 'state_dict'")
    return {k.removeprefix("module."): v for k, v in state.items()}


def is_ntech(state: dict) -> bool:
    """lukemelas' EfficientNet-PyTorch names (NTech-Lab's released snapshots)."""
    return "_conv_stem.weight" in state and "_fc.weight" in state


def by_position(state: dict, model: torch.nn.Module, path) -> dict:
    """lukemelas' EfficientNet and timm's tf_efficientnet hold the same tensors in the same
    order (stem, blocks: expand, depthwise, SE, project, each with its BN; head conv, BN,
    classifier): the file's tensors renamed to the model's, after checking every shape."""
    target = model.state_dict()
    if len(state) != len(target):
        raise ValueError(f"{path}: {len(state)} tensors, the model has {len(target)}: not the same network")
    for i, ((src_key, src), (dst_key, dst)) in enumerate(zip(state.items(), target.items())):
        if src.shape != dst.shape:  # dtypes may differ: their snapshots are fp16 throughout
            raise ValueError(f"{path}: the weights do not fit: tensor #{i} {src_key} {tuple(src.shape)} "
                             f"against {dst_key} {tuple(dst.shape)}")
    return {k: v.to(target[k].dtype) for k, v in zip(target.keys(), state.values())}


def is_selim(state: dict) -> bool:
    """selim's names: his encoder's tensors under encoder.*, his head fc.weight/fc.bias."""
    return any(k.startswith("encoder.") for k in state) and {"fc.weight", "fc.bias"} <= set(state)


def selim_to_project(state: dict) -> dict:
    """His key names -> this project's: fc.* -> head.*, the encoder's ImageNet classifier dropped."""
    if not is_selim(state):
        raise ValueError("not selim's layout (encoder.* and fc.weight/fc.bias)")
    out = {}
    for k, v in state.items():
        if k.startswith("encoder.classifier."):
            continue
        out["head." + k[3:] if k.startswith("fc.") else k] = v
    return out


@dataclass
class Imported:
    model: torch.nn.Module  # eval mode
    cfg: dict
    epoch: int
    metrics: dict
    imported: dict  # source, sha256, format, encoder, preprocessing, his epoch and score


def import_checkpoint(path: str | Path, encoder: str | None = None, source: str | None = None,
                      base_config: str | Path | None = None, raw=None) -> Imported:
    """A foreign weight file -> a DeepFakeClassifier with this project's config (b7.json with
    the file's encoder). `encoder`: the timm name when the file name does not say it (his
    names do). ValueError with the reason when the file is not in a known layout or does
    not fit the model strictly. `raw`: the file's content, when the caller has read it."""
    from .config import load_config
    from .engine import REPO_ROOT, build_model

    path = Path(path)
    if raw is None:
        raw = torch.load(path, map_location="cpu", weights_only=False)
    if not is_foreign(raw):
        raise ValueError(f"{path} is already a checkpoint of this project")
    state = _state_dict(raw)
    if is_ntech(state):
        layout = "ntech"
        seq = any(k.endswith("_expand_conv.conv.weight") for k in state)  # their SeqExpandConv
        base_config = base_config or REPO_ROOT / "configs" / ("b7_ntech_seq.json" if seq else
                                                              "b7_ntech_large_crop.json")
    else:
        layout = "selim" if is_selim(state) else "project"
    if layout == "selim":
        state = selim_to_project(state)
    cfg = load_config(base_config or REPO_ROOT / "configs" / "b7.json")
    encoder = encoder or (cfg["encoder"] if layout == "ntech" else encoder_from_name(path.name))
    if not encoder:
        raise ValueError(f"{path}: which encoder? The file name does not say (selim's names end in "
                         f"DeepFakeClassifier_<encoder>_<epoch>_<score>); pass --encoder")
    cfg.update(name=path.name.removesuffix(".pth").removesuffix(".pt"), encoder=encoder, pretrained=False)
    model = build_model(cfg, pretrained=False)
    if layout == "ntech":
        state = by_position(state, model, path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that differ
        raise ValueError(f"{path}: the weights do not fit {encoder} as a DeepFakeClassifier: "
                         f"{str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}") from None
    if missing or unexpected:
        raise ValueError(f"{path}: the weights do not fit {encoder} as a DeepFakeClassifier: "
                         f"{len(missing)} missing (first {missing[:3]}), {len(unexpected)} unexpected "
                         f"(first {unexpected[:3]})")
    meta = {k: raw[k] for k in ("epoch", "bce_best") if k in raw and not isinstance(raw[k], torch.Tensor)}
    metrics = {"bce_best": float(meta["bce_best"])} if "bce_best" in meta else {}
    from preprocessing.crops import DEFAULT_MARGIN

    # what the weights expect, read off the config they run with (b7.json: selim's; the NTech ones: theirs)
    expects = {"size": cfg["size"], "normalize": cfg["normalize"], "resize": cfg["data"]["resize"],
               "margin": DEFAULT_MARGIN if cfg["margin"] is None else cfg["margin"]}
    info = {"source": source or str(path.resolve()), "sha256": sha256(path), "format": layout,
            "encoder": encoder, "preprocessing": expects, **{f"original_{k}": v for k, v in meta.items()}}
    return Imported(model.eval(), cfg, int(meta.get("epoch", 0) or 0), metrics, info)
