"""The three DFDC model families. Every model returns float32 logits of shape (B, 1).

- DeepFakeClassifier: selim's 1st-place frame model, a timm encoder + pooling + linear.
- DeepFakeClassifierSeq3D: NTech-Lab's 3rd-place clip model, the same encoder with each
  expansion conv widened to look at the neighbouring frames.
"""
import torch
import torch.nn.functional as F
from timm.models._efficientnet_blocks import InvertedResidual
from torch import nn

from .weights import create_encoder


class DeepFakeClassifier(nn.Module):
    """One face crop (B, 3, H, W) -> fake logit (B, 1); H and W any multiple of 32."""

    def __init__(self, encoder: str, pretrained=False, dropout: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        self.encoder_name = encoder  # kept so that from_2d and checkpoints can rebuild the encoder
        self.drop_path_rate = drop_path_rate
        self.encoder = create_encoder(encoder, pretrained, drop_path_rate)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.num_features, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled encoder features (B, num_features)."""
        return self.pool(self.encoder(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 logits, so the loss is computed in full precision under autocast
        return self.head(self.dropout(self.features(x))).float()


class TemporalConv3d(nn.Conv3d):
    """A per-frame 1x1 conv widened to (3, 1, 1): each frame also sees the previous and next one.

    It sits where a 2D conv was, so it takes and returns (B*T, C, H, W); `num_frames` (T)
    says how to regroup the batch into clips. The clip's edge frames are repeated in time
    (replicate padding), so a clip of identical frames gives exactly the 2D conv's output.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, num_frames: int = 8,
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size=(3, 1, 1), bias=bias, device=device, dtype=dtype)
        self.num_frames = num_frames

    @staticmethod
    def inflate(weight2d: torch.Tensor) -> torch.Tensor:
        """(O, I, 1, 1) -> (O, I, 3, 1, 1), W/3 per tap: the three taps together equal the 2D conv."""
        return weight2d.unsqueeze(2).repeat(1, 1, 3, 1, 1) / 3

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, num_frames: int) -> "TemporalConv3d":
        plain_1x1 = (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
                     and conv.groups == 1 and conv.dilation == (1, 1) and conv.padding in ((0, 0), "valid", "same"))
        if not plain_1x1:
            raise ValueError(f"only a plain 1x1 nn.Conv2d can become a temporal conv, got {conv}")
        temporal = cls(conv.in_channels, conv.out_channels, bias=conv.bias is not None, num_frames=num_frames,
                       device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            temporal.weight.copy_(cls.inflate(conv.weight))
            if conv.bias is not None:
                temporal.bias.copy_(conv.bias)
        return temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, channels, height, width = x.shape
        if frames % self.num_frames:
            raise ValueError(f"batch of {frames} frames is not a whole number of {self.num_frames}-frame clips")
        clip = x.reshape(frames // self.num_frames, self.num_frames, channels, height, width).transpose(1, 2)
        clip = F.pad(clip, (0, 0, 0, 0, 1, 1), mode="replicate")  # (B, C, T+2, H, W)
        out = super().forward(clip)  # (B, C_out, T, H, W)
        return out.transpose(1, 2).reshape(frames, -1, height, width)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Accept a 2D model's (O, I, 1, 1) weight as well, so a trained DeepFakeClassifier's
        # state dict loads straight into a DeepFakeClassifierSeq3D.
        key = prefix + "weight"
        if key in state_dict and state_dict[key].dim() == 4:
            state_dict[key] = self.inflate(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def inflate_expansion_convs(encoder: nn.Module, num_frames: int) -> int:
    """Replace the 1x1 expand conv (`conv_pw`) of every timm InvertedResidual by a TemporalConv3d.

    Returns how many were replaced. Blocks without an expansion (DepthwiseSeparableConv,
    EdgeResidual) stay per-frame, as in NTech-Lab's model.
    """
    blocks = [m for m in encoder.modules() if isinstance(m, InvertedResidual)]
    for block in blocks:
        block.conv_pw = TemporalConv3d.from_conv2d(block.conv_pw, num_frames)
    return len(blocks)


class DeepFakeClassifierSeq3D(DeepFakeClassifier):
    """A clip of face crops (B, T, 3, H, W) -> one fake logit per frame (B, T) (NTech).

    The encoder runs on all B*T frames, its expansion convs mixing neighbouring frames;
    the pooled features of each frame go through the head, so every frame gets its own
    logit, trained against the clip's target and pooled with the frame models' faces at
    prediction (the confident strategy counts them). Built with the same seed, pretrained
    file or from `from_2d`, it starts out equal to the 2D model on a clip of identical
    frames, so training starts from the frame model and only learns the temporal part.
    """

    def __init__(self, encoder: str, pretrained=False, dropout: float = 0.0, seq_len: int = 8,
                 drop_path_rate: float = 0.0):
        super().__init__(encoder, pretrained, dropout, drop_path_rate)
        self.seq_len = seq_len  # the default T; forward takes T from its input
        if inflate_expansion_convs(self.encoder, seq_len) == 0:
            raise ValueError(f"encoder {encoder!r} has no InvertedResidual blocks to make temporal")

    @classmethod
    def from_2d(cls, model2d: DeepFakeClassifier, seq_len: int = 8) -> "DeepFakeClassifierSeq3D":
        """A clip model with a trained frame model's weights (its 1x1 expand convs inflated to W/3 per tap)."""
        model = cls(model2d.encoder_name, pretrained=False, dropout=model2d.dropout.p, seq_len=seq_len,
                    drop_path_rate=model2d.drop_path_rate)
        model.load_state_dict(model2d.state_dict(), strict=True)  # TemporalConv3d inflates 2D weights on load
        return model.to(next(model2d.parameters()).device)

    def temporal_convs(self) -> list:
        return [m for m in self.modules() if isinstance(m, TemporalConv3d)]

    def features(self, clip: torch.Tensor) -> torch.Tensor:
        """Pooled features of every frame, (B, T, num_features)."""
        if clip.dim() != 5:
            raise ValueError(f"expected a clip (B, T, 3, H, W), got shape {tuple(clip.shape)}")
        batch, num_frames = clip.shape[:2]
        for conv in self.temporal_convs():
            conv.num_frames = num_frames
        frame_features = super().features(clip.flatten(0, 1))
        return frame_features.view(batch, num_frames, -1)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(clip))).squeeze(-1).float()  # (B, T)
