"""Heo et al.'s ViT with CNN tokens and a distillation token (DeepFakeClassifierDistill)."""
import math
import os

import timm
import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.nn import functional as F

from .weights import create_encoder


TOKEN_MODES = ("separate", "fused")
OUTPUTS = ("mean", "dist")


class DeepFakeClassifierDistill(nn.Module):
    """A face crop (B, 3, size, size) -> ViT over its patches plus CNN features, with a class
    token and a distillation token (Heo et al. 2021, after DeiT).

    How the CNN's last feature map enters the ViT (`tokens`):
    - "fused" (Heo et al.'s code): each of the ViT's patch embeddings (D channels) is joined
      with the CNN feature cell of the same place (C channels) and the C + D channels are
      average-pooled to D (adaptive average pooling, fixed, no weights), so the patch grid
      must equal the CNN's grid (ViT-L/32 and B7 at 384: 12 x 12). The fused tokens take the
      ViT's position embeddings.
    - "separate" (this project's first design, the CPU config's): the CNN cells become extra
      tokens through a learned 1x1 projection with their own position embeddings, after the
      ViT's patch tokens.
    The sequence is [cls, dist, tokens...]; the distillation token has no position embedding
    (as in Heo et al., whose token came last: attention is blind to order without one).

    `shared_head` (Heo et al.): one linear head reads both tokens; otherwise `head` reads the
    class token and `head_dist` the distillation token (DeiT). In training mode forward
    returns `(cls_logit, dist_logit)` for `training.distill.distillation_loss`, the teacher
    being a frozen trained frame model that lives in the engine, not here. In eval mode it
    returns (B, 1): the mean of the two logits (`output` "mean", DeiT) or the distillation
    token's alone ("dist", Heo et al.'s validation and prediction).

    `pretrained` applies to the CNN: True (timm download, online only), False/None (random)
    or a local file. `vit_pretrained` applies to the ViT: True (timm download, online only),
    False (random), a local file (see `load_vit_weights`), or None (the default): download
    exactly when `pretrained is True`, as before this argument existed. `drop_path_rate`
    is the stochastic depth of both the CNN and the ViT (Heo et al.: 0.2 each).
    """

    def __init__(self, encoder: str, pretrained=False, dropout: float = 0.0,
                 vit: str = "deit_tiny_patch16_224", size: int = 224, vit_pretrained=None,
                 drop_path_rate: float = 0.0, tokens: str = "separate", shared_head: bool = False,
                 output: str = "mean"):
        super().__init__()
        if tokens not in TOKEN_MODES:
            raise ValueError(f"tokens must be one of {', '.join(TOKEN_MODES)}, got {tokens!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.encoder_name, self.size = encoder, size
        self.token_mode, self.shared_head, self.output = tokens, bool(shared_head), output
        self.encoder = create_encoder(encoder, pretrained, **({"drop_path_rate": drop_path_rate} if drop_path_rate else {}))
        if vit_pretrained is None:
            vit_pretrained = pretrained is True
        if not isinstance(vit_pretrained, (bool, str, os.PathLike)):
            raise ValueError(f"vit_pretrained must be True, False, None or a file path, got {vit_pretrained!r}")
        extra = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        self.vit = timm.create_model(vit, pretrained=vit_pretrained is True, num_classes=0, img_size=size, **extra)
        if not (isinstance(self.vit, VisionTransformer) and self.vit.cls_token is not None
                and self.vit.num_prefix_tokens == 1 and self.vit.pos_embed is not None
                and not self.vit.dynamic_img_size):
            raise ValueError(f"{vit!r}: need a timm VisionTransformer with a class token, absolute "
                             "position embeddings and no register tokens (e.g. deit_tiny_patch16_224)")
        cnn_stride = self.encoder.feature_info[-1]["reduction"]
        if size % cnn_stride:
            raise ValueError(f"size {size} must be a multiple of the encoder's stride {cnn_stride}")
        cnn_grid = (size // cnn_stride, size // cnn_stride)
        if tokens == "fused" and tuple(self.vit.patch_embed.grid_size) != cnn_grid:
            raise ValueError(f"tokens 'fused' joins each ViT patch with the CNN cell of the same place: "
                             f"{vit!r} at {size} px has a {tuple(self.vit.patch_embed.grid_size)} patch grid, "
                             f"{encoder!r} a {cnn_grid} feature grid (Heo et al.: ViT-L/32 and B7 at 384, 12 x 12)")
        if isinstance(vit_pretrained, (str, os.PathLike)):
            load_vit_weights(self.vit, vit_pretrained)

        dim = self.vit.embed_dim
        if tokens == "separate":
            self.cnn_proj = nn.Conv2d(self.encoder.num_features, dim, kernel_size=1)
            self.cnn_pos_embed = nn.Parameter(torch.zeros(1, cnn_grid[0] * cnn_grid[1], dim))
            trunc_normal_(self.cnn_pos_embed, std=0.02)
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        trunc_normal_(self.dist_token, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, 1)
        if not self.shared_head:
            self.head_dist = nn.Linear(dim, 1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The transformer's output sequence (B, 2 + its input tokens, embed_dim)."""
        if tuple(x.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"expected {self.size}x{self.size} input, got {tuple(x.shape[-2:])}")
        vit, batch = self.vit, x.shape[0]
        cnn = self.encoder(x)
        patch_tokens = vit.patch_embed(x)
        if self.token_mode == "fused":
            cells = cnn.flatten(2).transpose(1, 2)  # (B, N, C), row-major as the patches
            joined = torch.cat([cells.to(patch_tokens.dtype), patch_tokens], dim=2)  # CNN first, as Heo et al.
            n, width = joined.shape[1], patch_tokens.shape[2]
            patch_tokens = F.adaptive_avg_pool1d(joined.reshape(batch * n, 1, -1), width).view(batch, n, width)
            extra = None
        else:
            extra = self.cnn_proj(cnn).flatten(2).transpose(1, 2) + self.cnn_pos_embed
        if vit.no_embed_class:  # the ViT's position table covers the patches only
            patch_tokens, cls_token = patch_tokens + vit.pos_embed, vit.cls_token
        else:
            patch_tokens, cls_token = patch_tokens + vit.pos_embed[:, 1:], vit.cls_token + vit.pos_embed[:, :1]
        parts = [cls_token.expand(batch, -1, -1), self.dist_token.expand(batch, -1, -1), patch_tokens]
        if extra is not None:
            parts.append(extra)
        return vit.norm(vit.blocks(vit.norm_pre(vit.pos_drop(torch.cat(parts, dim=1)))))

    def forward(self, x: torch.Tensor):
        tokens = self.tokens(x)
        head_dist = self.head if self.shared_head else self.head_dist
        cls_logit = self.head(self.dropout(tokens[:, 0])).float()
        dist_logit = head_dist(self.dropout(tokens[:, 1])).float()
        if self.training:
            return cls_logit, dist_logit
        return dist_logit if self.output == "dist" else (cls_logit + dist_logit) / 2


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
