"""The realism (MOS) regressor of the DFGC-2023 VRA solution (Dragar et al., 3rd place).

A timm backbone (its own pooled features: ConvNeXt or EVA in VRA) embeds every frame of a short run of consecutive face crops (VRA: 5);
the mean and the standard deviation of the frame embeddings over time, concatenated,
go through dropout and a small MLP to one mean opinion score. The std is the unbiased
one, as torch.std computes it in VRA; a one-frame clip has no spread and gets zeros.
"""
from __future__ import annotations

import torch
from torch import nn

from .weights import create_encoder

VRA_HIDDEN = (512, 256, 64)


def mean_std_pool(features: torch.Tensor) -> torch.Tensor:
    """(B, T, F) frame features -> (B, 2F): [mean over T, unbiased std over T]."""
    if features.dim() != 3:
        raise ValueError(f"expected frame features (B, T, F), got shape {tuple(features.shape)}")
    mean = features.mean(dim=1)
    std = features.std(dim=1, unbiased=True) if features.shape[1] > 1 else torch.zeros_like(mean)
    return torch.cat([mean, std], dim=1)


class RealismRegressor(nn.Module):
    """A clip of one face (B, T, 3, H, W) -> its MOS (B, 1), float32 (the head in float32
    under autocast too; the backbone follows autocast).

    `prior` (a buffer, saved with the weights) is the training labels' mean: training
    starts the last layer's bias there, and prediction falls back to it for a video it
    cannot score (the RMSE-optimal constant).
    """

    def __init__(self, encoder: str, pretrained=False, dropout: float = 0.1, hidden=VRA_HIDDEN,
                 drop_path_rate: float = 0.0, prior: float = 3.0):
        super().__init__()
        self.encoder_name = encoder
        self.encoder = create_encoder(encoder, pretrained, drop_path_rate, pooled=True)  # CNN or ViT
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        width = 2 * self.encoder.num_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(inplace=True)]
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.head = nn.Sequential(*layers)
        self.register_buffer("prior", torch.tensor(float(prior)))

    def set_prior(self, mean_mos: float) -> None:
        """Start from the labels' mean: the output bias and the fallback score."""
        with torch.no_grad():
            self.prior.fill_(float(mean_mos))
            self.head[-1].bias.fill_(float(mean_mos))

    def frame_features(self, clip: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of every frame, (B, T, F)."""
        if clip.dim() == 4:  # one frame per item
            clip = clip.unsqueeze(1)
        if clip.dim() != 5:
            raise ValueError(f"expected a clip (B, T, 3, H, W), got shape {tuple(clip.shape)}")
        batch, frames = clip.shape[:2]
        return self.encoder(clip.flatten(0, 1)).flatten(1).view(batch, frames, -1)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        pooled = mean_std_pool(self.frame_features(clip).float())
        # The head runs in float32 even under autocast, which would cast its Linear layers
        # to bf16/fp16: a bf16 MOS near 3 is rounded to steps of 1/64, noise in the loss,
        # in the choice of the best epoch and in every prediction.
        with torch.autocast(device_type=pooled.device.type, enabled=False):
            return self.head(pooled)
