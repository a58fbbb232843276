"""Heo et al.'s ViT with CNN tokens and a distillation token (DeepFakeClassifierDistill)."""
import timm
import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .weights import create_encoder


class DeepFakeClassifierDistill(nn.Module):
    """A face crop (B, 3, size, size) -> ViT over its patches plus CNN feature tokens (Heo et al.).

    The token sequence is [cls, dist, ViT patch tokens, CNN tokens]; `head` reads the
    class token, `head_dist` the distillation token. In training mode forward returns
    `(cls_logit, dist_logit)` for the engine's loss
        0.5 * BCE(cls_logit, y) + 0.5 * BCE(dist_logit, sigmoid(teacher_logit)),
    the teacher being a frozen trained DeepFakeClassifier that lives in the engine, not here.
    In eval mode it returns their mean (B, 1). `pretrained` applies to the CNN (True or a
    local file); the ViT downloads ImageNet weights only when `pretrained is True`.
    """

    def __init__(self, encoder: str, pretrained=False, dropout: float = 0.0,
                 vit: str = "deit_tiny_patch16_224", size: int = 224):
        super().__init__()
        self.encoder_name, self.size = encoder, size
        self.encoder = create_encoder(encoder, pretrained)
        self.vit = timm.create_model(vit, pretrained=pretrained is True, num_classes=0, img_size=size)
        if not (isinstance(self.vit, VisionTransformer) and self.vit.cls_token is not None
                and self.vit.num_prefix_tokens == 1 and self.vit.pos_embed is not None
                and not self.vit.dynamic_img_size):
            raise ValueError(f"{vit!r}: need a timm VisionTransformer with a class token, absolute "
                             "position embeddings and no register tokens (e.g. deit_tiny_patch16_224)")
        cnn_stride = self.encoder.feature_info[-1]["reduction"]
        if size % cnn_stride:
            raise ValueError(f"size {size} must be a multiple of the encoder's stride {cnn_stride}")

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
