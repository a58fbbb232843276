"""Fold batch norms into the convolutions before them, for prediction.

In eval mode a batch norm is a per-channel affine map, y = (x - mean) / sqrt(var + eps) * g + b,
so after a convolution it can be folded into that convolution's weight and bias: the same
function, one pass over the activations fewer. On 2 CPU cores the batch norms of
EfficientNet-Lite0 cost about two thirds of its convolutions' time (cProfile of 6_predict),
so folding them is the cheapest speed-up prediction has.

Only the blocks whose forward is known to run a convolution straight into its norm are
folded (timm's EfficientNet stem and head, InvertedResidual, DepthwiseSeparableConv,
ConvBnAct, EdgeResidual; the sequence model's temporal 1x1 convolutions included); every
other module is left as it is. A timm BatchNormAct2d keeps its dropout and activation.
"""
from __future__ import annotations

import torch
from torch import nn

def _pairs() -> dict[type, tuple[tuple[str, str], ...]]:
    """(conv, norm) attribute pairs per block class, each run back to back in its forward."""
    from timm.models import _efficientnet_blocks as b
    from timm.models.efficientnet import EfficientNet

    return {
        EfficientNet: (("conv_stem", "bn1"), ("conv_head", "bn2")),
        b.InvertedResidual: (("conv_s2d", "bn_s2d"), ("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
        b.DepthwiseSeparableConv: (("conv_s2d", "bn_s2d"), ("conv_dw", "bn1"), ("conv_pw", "bn2")),
        b.ConvBnAct: (("conv", "bn1"),),
        b.EdgeResidual: (("conv_exp", "bn1"), ("conv_pwl", "bn2")),
    }


def _foldable(conv, bn) -> bool:
    from timm.layers import BatchNormAct2d

    return (isinstance(conv, (nn.Conv2d, nn.Conv3d)) and type(bn) in (nn.BatchNorm2d, BatchNormAct2d)
            and bn.running_mean is not None and bn.running_var is not None
            and bn.num_features == conv.out_channels)


@torch.no_grad()
def _fold(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """Fold `bn` into `conv` in place; returns what replaces `bn`."""
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    w = conv.weight
    w.copy_((w.double() * scale.view(-1, *([1] * (w.dim() - 1)))).to(w.dtype))  # keeps its memory order
    bias = conv.bias.double() * scale + shift if conv.bias is not None else shift
    conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=False)
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    rest = [m for m in (drop, act) if m is not None and not isinstance(m, nn.Identity)]
    return nn.Sequential(*rest) if rest else nn.Identity()


def foldable(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """(block, conv attribute, norm attribute) of every known conv -> batch norm pair."""
    known = _pairs()
    return [(module, conv_name, bn_name) for module in model.modules()
            for conv_name, bn_name in known.get(type(module), ())
            if _foldable(getattr(module, conv_name, None), getattr(module, bn_name, None))]


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every known conv -> batch norm pair of an eval-mode model, in place; returns how
    many were folded. A model in training mode is refused (its norms use batch statistics)."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    pairs = foldable(model)
    for module, conv_name, bn_name in pairs:
        setattr(module, bn_name, _fold(getattr(module, conv_name), getattr(module, bn_name)))
    return len(pairs)
