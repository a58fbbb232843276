"""Heo et al.'s ViT with CNN tokens and a distillation token (DeepFakeClassifierDistill)."""
import math
import os

import timm
import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .weights import create_encoder


class DeepFakeClassifierDistill(nn.Module):
    """A face crop (B, 3, size, size) -> ViT over its patches plus CNN feature tokens (Heo et al.).

    The token sequence is [cls, dist, ViT patch tokens, CNN tokens]; `head` reads the
    class token, `head_dist` the distillation token. In training mode forward returns
    `(cls_logit, dist_logit)` for `training.distill.distillation_loss` (Heo et al. follow
    DeiT's hard distillation: 0.5 * BCE(cls_logit, y) + 0.5 * BCE(dist_logit, 1[teacher_logit > 0])),
    the teacher being a frozen trained frame model that lives in the engine, not here.
    In eval mode it returns their mean (B, 1).

    `pretrained` applies to the CNN: True (timm download, online only), False/None (random)
    or a local file. `vit_pretrained` applies to the ViT: True (timm download, online only),
    False (random), a local file (see `load_vit_weights`), or None (the default): download
    exactly when `pretrained is True`, as before this argument existed.
    """

    def __init__(self, encoder: str, pretrained=False, dropout: float = 0.0,
                 vit: str = "deit_tiny_patch16_224", size: int = 224, vit_pretrained=None):
        super().__init__()
        self.encoder_name, self.size = encoder, size
        self.encoder = create_encoder(encoder, pretrained)
        if vit_pretrained is None:
            vit_pretrained = pretrained is True
        if not isinstance(vit_pretrained, (bool, str, os.PathLike)):
            raise ValueError(f"vit_pretrained must be True, False, None or a file path, got {vit_pretrained!r}")
        self.vit = timm.create_model(vit, pretrained=vit_pretrained is True, num_classes=0, img_size=size)
        if not (isinstance(self.vit, VisionTransformer) and self.vit.cls_token is not None
                and self.vit.num_prefix_tokens == 1 and self.vit.pos_embed is not None
                and not self.vit.dynamic_img_size):
            raise ValueError(f"{vit!r}: need a timm VisionTransformer with a class token, absolute "
                             "position embeddings and no register tokens (e.g. deit_tiny_patch16_224)")
        cnn_stride = self.encoder.feature_info[-1]["reduction"]
        if size % cnn_stride:
            raise ValueError(f"size {size} must be a multiple of the encoder's stride {cnn_stride}")
        if isinstance(vit_pretrained, (str, os.PathLike)):
            load_vit_weights(self.vit, vit_pretrained)

        dim = self.vit.embed_dim
        self.cnn_proj = nn.Conv2d(self.encoder.num_features, dim, kernel_size=1)
        self.cnn_pos_embed = nn.Parameter(torch.zeros(1, (size // cnn_stride) ** 2, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        trunc_normal_(self.cnn_pos_embed, std=0.02)
        trunc_normal_(self.dist_token, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, 1)
        self.head_dist = nn.Linear(dim, 1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The transformer's output sequence (B, 2 + patches + CNN cells, embed_dim)."""
        if tuple(x.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"expected {self.size}x{self.size} input, got {tuple(x.shape[-2:])}")
        vit, batch = self.vit, x.shape[0]
        cnn_tokens = self.cnn_proj(self.encoder(x)).flatten(2).transpose(1, 2) + self.cnn_pos_embed
        patch_tokens = vit.patch_embed(x)
        if vit.no_embed_class:  # the ViT's position table covers the patches only
            patch_tokens, cls_token = patch_tokens + vit.pos_embed, vit.cls_token
        else:
            patch_tokens, cls_token = patch_tokens + vit.pos_embed[:, 1:], vit.cls_token + vit.pos_embed[:, :1]
        tokens = torch.cat([cls_token.expand(batch, -1, -1), self.dist_token.expand(batch, -1, -1),
                            patch_tokens, cnn_tokens], dim=1)
        return vit.norm(vit.blocks(vit.norm_pre(vit.pos_drop(tokens))))

    def forward(self, x: torch.Tensor):
        tokens = self.tokens(x)
        cls_logit = self.head(self.dropout(tokens[:, 0])).float()
        dist_logit = self.head_dist(self.dropout(tokens[:, 1])).float()
        if self.training:
            return cls_logit, dist_logit
        return (cls_logit + dist_logit) / 2


# Tensors of a classification ViT that a headless one (num_classes=0) has no use for.
VIT_HEAD_PREFIXES = ("head.",)


def read_vit_state_dict(path) -> dict:
    """A state dict of tensors from `path`, unwrapped from a "state_dict" or "model" key
    (timm training checkpoints, DeiT's release files) and from DDP's "module." prefix."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ViT weights {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_vit_weights(vit: VisionTransformer, path) -> None:
    """Load a local state dict of a timm VisionTransformer of the same architecture into `vit`.

    The classification head (`head.*`) is dropped, `pos_embed` is resampled (bicubic, timm's
    `resample_abs_pos_embed`) when the file was trained on another patch grid (e.g. 224 px
    weights in a 64 or 384 px model); everything else must match exactly, or a ValueError
    names the missing, unexpected and mis-shaped keys.
    """
    state = {k: v for k, v in read_vit_state_dict(path).items() if not k.startswith(VIT_HEAD_PREFIXES)}
    target = vit.state_dict()
    pos, prefix = state.get("pos_embed"), 0 if vit.no_embed_class else vit.num_prefix_tokens
    if pos is not None and pos.ndim == 3 and pos.shape != target["pos_embed"].shape:
        cells = pos.shape[1] - prefix
        old_side = math.isqrt(max(cells, 0))
        if cells > 0 and old_side * old_side == cells and pos.shape[2] == target["pos_embed"].shape[2]:
            state["pos_embed"] = resample_abs_pos_embed(
                pos.float(), new_size=list(vit.patch_embed.grid_size), old_size=[old_side, old_side],
                num_prefix_tokens=prefix).to(pos.dtype)
        # else: another width or a non-square grid, reported with the other wrong shapes below
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    wrong = sorted(k for k in set(state) & set(target) if state[k].shape != target[k].shape)
    if missing or unexpected or wrong:
        def show(keys):
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "") or "none"
        shapes = "; ".join(f"{k}: {tuple(state[k].shape)} != {tuple(target[k].shape)}" for k in wrong[:4])
        name = (getattr(vit, "pretrained_cfg", None) or {}).get("architecture", type(vit).__name__)
        raise ValueError(f"{path} does not fit the ViT {name}: "
                         f"missing keys: {show(missing)}; unexpected keys: {show(unexpected)}; "
                         f"wrong shapes: {shapes or 'none'}")
    vit.load_state_dict(state, strict=True)
