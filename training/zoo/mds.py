"""Audio-visual dissonance (Chugh et al., "Not made for each other", ACM MM 2020).

Per 1-second segment, a visual stream embeds the face crops (a 3D CNN, torchvision's
r3d_18, random init) and an audio stream embeds the segment's MFCCs (a SyncNet-style 2D
CNN); the Euclidean distance between the two embeddings is the segment's dissonance.
Training pulls a real segment's embeddings together and pushes a fake's apart beyond a
margin (contrastive loss), plus a cross-entropy head on each stream (the paper's 1:1:1).
A video's Modality Dissonance Score (MDS) is the mean distance over its segments; the
per-segment distances localise the manipulated stretch.

Beyond the paper, `model.offset_search` scores a video as SyncNet finds an AV offset
(Chung & Zisserman, "Out of time", 2016): the video's distance is computed with its sound
moved by every offset on a grid, and the score is how far the distance at offset 0 lies
above the smallest one (0 when the sound as recorded is the best alignment). The estimated
offset (the argmin) says by how much the sound leads or lags.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PAPER_MARGIN = 0.99  # the paper's contrastive margin
MOTION_ENCODER = "mouth_motion"  # DissonanceNet's encoder name for MotionStream
LIP_ENCODER = "lip_landmarks"  # ... and for LipStream


@dataclass
class MDSOutput:
    distance: torch.Tensor      # (B,) Euclidean distance of the L2-normalised embeddings, in [0, 2]
    video_logit: torch.Tensor   # (B,) the visual stream's fake logit
    audio_logit: torch.Tensor   # (B,) the audio stream's fake logit
    video_embedding: torch.Tensor
    audio_embedding: torch.Tensor
    video_features: torch.Tensor | None = None  # (B, C * T) the streams' outputs before their
    audio_features: torch.Tensor | None = None  # projections: what `video_distance` joins over time


def _projection(width: int, hidden: int, embedding: int) -> nn.Sequential:
    """The paper's fc layers: Linear -> BN -> ReLU -> Linear (4096 and 1024 there)."""
    return nn.Sequential(nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, embedding))


def _head(embedding: int) -> nn.Sequential:
    """The paper's per-stream classifier: BN -> Dropout 0.5 -> Linear (one fake logit here,
    the same as its two-way softmax)."""
    return nn.Sequential(nn.BatchNorm1d(embedding), nn.Dropout(0.5), nn.Linear(embedding, 1))


def _check_time_steps(time_steps) -> int | None:
    if time_steps is None:
        return None
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
        raise ValueError(f"model.time_steps must be null (pool over time, as the paper) or an integer >= 1, "
                         f"got {time_steps!r}")
    return time_steps


class AudioStream(nn.Module):
    """MFCCs (B, 1, 13, W) -> features (B, C): SyncNet-style conv blocks, pooled; with
    `time_steps` T the time axis is kept, pooled to T steps (B, C * T), so the embedding
    knows WHEN each sound came, not only which sounds the second held."""

    def __init__(self, channels: int = 64, time_steps: int | None = None):
        super().__init__()
        c = channels
        self.time_steps = _check_time_steps(time_steps)

        def block(i, o, pool):
            layers = [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(pool)] if pool else [])

        self.net = nn.Sequential(*block(1, c, (1, 2)), *block(c, 2 * c, (2, 2)), *block(2 * c, 4 * c, (2, 2)),
                                 *block(4 * c, 4 * c, None), nn.AdaptiveAvgPool2d((1, self.time_steps or 1)),
                                 nn.Flatten())
        self.num_features = 4 * c * (self.time_steps or 1)

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.net(mfcc)


MOUTH_REGION = (0.5, 0.95, 0.2, 0.8)  # of a square face crop with step 1's --av-margin 0.15: mouth and chin


def region_rows_cols(size: tuple[int, int], region) -> tuple[slice, slice]:
    """(row slice, column slice) of `region` (top, bottom, left, right, fractions of the
    crop) in an (H, W) crop; the whole crop when region is None."""
    h, w = size
    if region is None:
        return slice(0, h), slice(0, w)
    top, bottom, left, right = (float(v) for v in region)
    if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
        raise ValueError(f"model.region must be [top, bottom, left, right] fractions with top < bottom and "
                         f"left < right, got {list(region)}")
    r0, c0 = round(top * h), round(left * w)
    return slice(r0, max(r0 + 1, round(bottom * h))), slice(c0, max(c0 + 1, round(right * w)))


def region_at_rows(x: torch.Tensor, region, rows: int, mode: str) -> torch.Tensor:
    """`region` of crops (..., H, W) (see region_rows_cols), resized to `rows` rows at its own
    aspect ratio with F.interpolate's `mode`: what a per-frame visual stream looks at."""
    r, c = region_rows_cols(x.shape[-2:], region)
    x = x[..., r, c]
    h, w = x.shape[-2:]
    size = (rows, max(1, round(w * rows / h)))
    return F.interpolate(x, size=size, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))


def _region(region):
    """model.region -> (top, bottom, left, right) fractions, or None (the whole crop); checked."""
    if isinstance(region, str) and region != "mouth":
        raise ValueError(f"model.region must be null (the whole face), \"mouth\" or [top, bottom, left, right], "
                         f"got {region!r}")
    out = MOUTH_REGION if region == "mouth" else (tuple(region) if region is not None else None)
    region_rows_cols((100, 100), out)  # validates it
    return out


class VisualStream(nn.Module):
    """Face crops (B, T, 3, H, W) -> features (B, 512): torchvision's r3d_18 without its fc,
    on the whole crop or on `region` of it (SyncNet's mouth region: "mouth").

    With `time_steps` T the network keeps the time axis: its layers 2-4 stride over space
    only (r3d_18 halves time in each, so 8 frames end as 1) and the pooling keeps T steps:
    features (B, 512 * T) in temporal order, to be matched with the audio stream's."""

    def __init__(self, pretrained: bool = False, region=None, time_steps: int | None = None):
        super().__init__()
        from torchvision.models.video import R3D_18_Weights, r3d_18

        self.region = _region(region)

        self.net = r3d_18(weights=R3D_18_Weights.KINETICS400_V1 if pretrained is True else None)
        self.time_steps = _check_time_steps(time_steps)
        self.num_features = self.net.fc.in_features * (self.time_steps or 1)
        self.net.fc = nn.Identity()
        if self.time_steps:
            for layer in (self.net.layer2, self.net.layer3, self.net.layer4):
                block = layer[0]
                block.conv1[0].stride = (1,) + tuple(block.conv1[0].stride[1:])
                block.downsample[0].stride = (1,) + tuple(block.downsample[0].stride[1:])
            self.net.avgpool = nn.AdaptiveAvgPool3d((self.time_steps, 1, 1))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        if clip.dim() != 5:
            raise ValueError(f"expected face crops (B, T, 3, H, W), got shape {tuple(clip.shape)}")
        rows, cols = region_rows_cols(clip.shape[-2:], self.region)
        # torchvision's video models take (B, 3, T, H, W); the flatten after the pooling keeps (C, T) order
        return self.net(clip[..., rows, cols].transpose(1, 2))


class FrameStream(nn.Module):
    """Face crops (B, T, 3, H, W) -> features (B, C * time_steps) in (C, T) order: a frozen
    ImageNet 2D encoder (timm, e.g. tf_efficientnet_lite0 with the package-shipped weights)
    run on `region` of every frame, resized to `frame_size` rows; its pooled features per
    frame, pooled over time to `time_steps`. A departure from the paper's r3d_18 for the CPU
    recipe: trained from random init on the little speech a laptop has, r3d_18 does not
    learn sync (bench/dissonance), a frozen ImageNet encoder sees an open mouth from the start.

    Being frozen, it may also be given the frames' features (B, T, C), `frame_features` of
    the same frames (`data.frame_features`: the dataset computes them once per video)."""

    def __init__(self, encoder: str, pretrained=False, region=None, time_steps: int | None = None,
                 frame_size: int = 64):
        super().__init__()
        from .weights import create_encoder

        if not time_steps:
            raise ValueError(f"a per-frame visual stream ({encoder}) needs model.time_steps (frames kept per segment)")
        self.region = _region(region)
        self.frame_size, self.time_steps = int(frame_size), _check_time_steps(time_steps)
        self.encoder = create_encoder(encoder, pretrained=pretrained, pooled=True)
        for param in self.encoder.parameters():
            param.requires_grad_(False)
        self.channels = self.encoder.num_features
        self.num_features = self.channels * self.time_steps
        self.encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: its batch norms keep their ImageNet statistics
        return self

    @torch.no_grad()
    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised face crops (N, 3, H, W) -> the encoder's pooled features (N, C) of their region."""
        return self.encoder(region_at_rows(frames, self.region, self.frame_size, "bilinear")).float()

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        if clip.dim() == 3 and clip.shape[-1] == self.channels:
            f = clip.float()  # the frames' features, already computed
        elif clip.dim() == 5:
            f = self.frame_features(clip.flatten(0, 1)).view(clip.shape[0], clip.shape[1], -1)
        else:
            raise ValueError(f"expected face crops (B, T, 3, H, W) or their features (B, T, {self.channels}), "
                             f"got shape {tuple(clip.shape)}")
        return F.adaptive_avg_pool1d(f.transpose(1, 2), self.time_steps).flatten(1)


class MotionStream(nn.Module):
    """Face crops (B, T, 3, H, W) -> features (B, C * T) in (C, T) order: how the mouth
    moves, not what it looks like. The grey level of `region` (the mouth), resized to
    `frame_size` rows, is differenced between consecutive frames (the first frame's
    difference is zero); two small convolutions and a spatial mean turn each difference
    image into C channels. Trained from random init (about 3k weights at C = 16).

    Beyond the paper, for CPU data: lip sync is the co-variation of mouth motion and
    loudness (on GRID the plain correlation of mean |frame difference| and log energy
    already separates synced from shifted sound, bench/dissonance); a frame's appearance, which an
    r3d_18 or an ImageNet encoder sees, carries the speaker, the lighting and the crop,
    which a few dozen training clips cannot teach a network to ignore."""

    def __init__(self, region=None, time_steps: int | None = None, frame_size: int = 32, channels: int = 16):
        super().__init__()
        if not time_steps:
            raise ValueError("the mouth-motion visual stream needs model.time_steps (frames kept per segment)")
        self.region = _region(region)
        self.frame_size, self.time_steps, self.channels = int(frame_size), _check_time_steps(time_steps), int(channels)
        c = self.channels
        self.net = nn.Sequential(nn.Conv2d(1, c, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(c),
                                 nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
                                 nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = c * self.time_steps

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        if clip.dim() != 5:
            raise ValueError(f"expected face crops (B, T, 3, H, W), got shape {tuple(clip.shape)}")
        b, t = clip.shape[:2]
        grey = clip.float().mean(2, keepdim=True).flatten(0, 1)  # (B * T, 1, H, W)
        x = region_at_rows(grey, self.region, self.frame_size, "area")
        x = x.view(b, t, *x.shape[1:])
        motion = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], 1)
        f = self.net(motion.flatten(0, 1)).view(b, t, -1)
        return F.adaptive_avg_pool1d(f.transpose(1, 2), self.time_steps).flatten(1)


class LipStream(nn.Module):
    """The lips' shape per frame (B, T, F), `training.lips.lip_features` of each frame's dlib
    points (F = NUM_LIP_FEATURES: the 20 lip points and four openings, free of the face's
    size, place and roll) -> features (B, C * T) in (C, T) order: each feature's mean over
    the segment removed (a speaker's resting lip shape is not sync), then a per-frame linear
    map to C channels with a batch norm and ReLU. Trained from random init (about 1.5k
    weights at C = 32); the temporal projection after it learns how the shape moves.

    Beyond the paper, for CPU data: dlib's points are the mouth's motion with the speaker,
    the lighting and the crop taken out; the dataset (and 6_predict) compute them from the
    crops once (`training.lips.crops_lip_features`), the stream never sees pixels."""

    def __init__(self, time_steps: int | None = None, channels: int = 32):
        super().__init__()
        from ..lips import NUM_LIP_FEATURES

        if not time_steps:
            raise ValueError("the lip-landmark visual stream needs model.time_steps (frames kept per segment)")
        self.time_steps, self.channels = _check_time_steps(time_steps), int(channels)
        self.input_features = NUM_LIP_FEATURES  # what a frame is: fingerprint and prediction read it
        self.net = nn.Sequential(nn.Conv1d(self.input_features, self.channels, 1, bias=False),
                                 nn.BatchNorm1d(self.channels), nn.ReLU(inplace=True))
        self.num_features = self.channels * self.time_steps

    def forward(self, lips: torch.Tensor) -> torch.Tensor:
        if lips.dim() != 3 or lips.shape[-1] != self.input_features:
            raise ValueError(f"expected the frames' lip features (B, T, {self.input_features}) "
                             f"(training.lips.crops_lip_features of the face crops), got shape {tuple(lips.shape)}")
        x = lips.float().transpose(1, 2)  # (B, F, T)
        f = self.net(x - x.mean(2, keepdim=True))
        return F.adaptive_avg_pool1d(f, self.time_steps).flatten(1)


class TemporalProjection(nn.Module):
    """Features (B, C * T) in (C, T) order -> an embedding (B, E * T) that keeps time: a
    per-step 1x1 conv, a temporal conv, and the temporal mean removed, so that the distance
    of two L2-normalised embeddings is sqrt(2 - 2 r), r the streams' correlation over the
    segment (SyncNet's question: do mouth and sound rise and fall together?)."""

    def __init__(self, channels: int, time_steps: int, hidden: int, embedding: int, dropout: float = 0.0):
        super().__init__()
        self.channels, self.time_steps = int(channels), int(time_steps)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Conv1d(channels, hidden, 1), nn.BatchNorm1d(hidden),
                                 nn.ReLU(inplace=True), nn.Conv1d(hidden, hidden, 5, padding=2),
                                 nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Conv1d(hidden, embedding, 3, padding=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.sequence(features.view(features.shape[0], self.channels, self.time_steps))

    def sequence(self, steps: torch.Tensor) -> torch.Tensor:
        """Per-step features (B, C, L) of any length L -> (B, E * L), the mean over all L
        steps removed: the projection is convolutional in time, so it runs as well over a
        whole video's consecutive segments joined end to end."""
        x = self.net(steps)
        return (x - x.mean(2, keepdim=True)).flatten(1)


class DissonanceNet(nn.Module):
    """(face crops (B, T, 3, H, W), MFCCs (B, 1, 13, W)) of a segment -> MDSOutput.

    `region` (None: the whole face, as the paper; "mouth" or [top, bottom, left, right]
    fractions: the visual stream sees that part of the crop only, SyncNet's choice).
    `time_steps` (None: each stream pools over time, as the paper; T: both keep T steps
    of time in their features, so a segment's embedding can tell a shifted sound).
    `encoder` (r3d_18: the paper's 3D CNN; a timm 2D encoder, e.g. tf_efficientnet_lite0:
    FrameStream, frozen and run per frame, which needs `time_steps`; `frame_size` its rows;
    "mouth_motion": MotionStream, a small CNN on the differences of consecutive frames;
    "lip_landmarks": LipStream, on the frames' dlib lip points, which it is given in place
    of crops).
    `temporal_embedding` (False: the paper's fc projections; True, with `time_steps`: both
    streams project each time step, TemporalProjection, so that the distance measures how
    well mouth and sound co-vary over the segment; `feature_dropout` before the visual one).
    `mds` ("segments": a video's score is the mean segment distance, the paper's MDS;
    "video", beyond it, with `temporal_embedding`: one distance over the video's segments
    joined in time, `video_distance`).
    `offset_search` ({"max_s": M, "step_s": S}; None: the score is the distance at the
    recorded alignment): a video's score is its distance at offset 0 minus the smallest
    distance over the sound moved by every multiple of S within +-M s (`offset_curve`,
    `offset_score`): relative to the video itself, so a speaker, camera or recording that
    moves every alignment's distance alike moves the score less.
    `calibration` (a, b; buffers saved with the weights) maps a video's MDS to
    P(FAKE) = sigmoid(a * (MDS - b)); training fits it on the validation fold.
    """

    def __init__(self, encoder: str = "r3d_18", pretrained=False, dropout: float = 0.5, embedding: int = 1024,
                 hidden: int = 4096, audio_channels: int = 64, margin: float = PAPER_MARGIN,
                 drop_path_rate: float = 0.0, region=None, time_steps: int | None = None,
                 temporal_embedding: bool = False, frame_size: int = 64, feature_dropout: float = 0.0,
                 mds: str = "segments", offset_search: dict | None = None):
        super().__init__()
        self.offsets = search_offsets(offset_search)
        if mds not in ("segments", "video"):
            raise ValueError(f"model.mds must be \"segments\" (the paper's mean segment distance) or \"video\" "
                             f"(one distance over the video's joined segments), got {mds!r}")
        if mds == "video" and not temporal_embedding:
            raise ValueError("model.mds \"video\" needs model.temporal_embedding (embeddings that keep time)")
        self.encoder_name, self.mds = encoder, mds
        self.margin = float(margin)  # the contrastive loss's (the model's `model.margin` config key)
        if encoder == "r3d_18":
            self.video = VisualStream(pretrained, region, time_steps)
        elif encoder == MOTION_ENCODER:
            self.video = MotionStream(region, time_steps, frame_size)
        elif encoder == LIP_ENCODER:
            if region is not None:
                raise ValueError("model.region picks pixels; the lip-landmark stream reads dlib's lip points: "
                                 "leave model.region null")
            self.video = LipStream(time_steps)
        else:
            self.video = FrameStream(encoder, pretrained, region, time_steps, frame_size)
        self.audio = AudioStream(audio_channels, time_steps)
        if temporal_embedding:
            t = _check_time_steps(time_steps)
            if not t:
                raise ValueError("model.temporal_embedding needs model.time_steps (the time steps it keeps)")
            self.video_proj = TemporalProjection(self.video.num_features // t, t, hidden, embedding, feature_dropout)
            self.audio_proj = TemporalProjection(self.audio.num_features // t, t, hidden, embedding)
            width = embedding * t
        else:
            self.video_proj = _projection(self.video.num_features, hidden, embedding)
            self.audio_proj = _projection(self.audio.num_features, hidden, embedding)
            width = embedding
        self.video_head, self.audio_head = _head(width), _head(width)
        if dropout != 0.5:
            for head in (self.video_head, self.audio_head):
                head[1].p = dropout
        self.register_buffer("calibration", torch.tensor([10.0, 0.5]))  # a, b: refitted on validation

    def forward(self, clip: torch.Tensor, mfcc: torch.Tensor) -> MDSOutput:
        """`clip`: a segment's face crops (B, T, 3, H, W), or what the visual stream reads in
        their place (B, T, F): a frozen encoder's features or the lip landmarks' features."""
        fv, fa = self.video(clip), self.audio(mfcc)
        v = F.normalize(self.video_proj(fv).float(), dim=1)
        a = F.normalize(self.audio_proj(fa).float(), dim=1)
        return MDSOutput(distance=(v - a).norm(dim=1), video_logit=self.video_head(v).squeeze(1).float(),
                         audio_logit=self.audio_head(a).squeeze(1).float(), video_embedding=v, audio_embedding=a,
                         video_features=fv, audio_features=fa)

    def video_distance(self, video_features: torch.Tensor, audio_features: torch.Tensor) -> torch.Tensor:
        """One distance for a whole video (`model.mds` "video", beyond the paper): the streams'
        features (K, C * T) of its K segments in time order (MDSOutput.video_features,
        .audio_features) are joined into K * T steps, projected, centred over all of them and
        L2-normalised; the distance is sqrt(2 - 2 r), r the correlation of mouth and sound
        over the whole video rather than within each second. With K = 1 it is the segment's
        own distance."""
        if not isinstance(self.video_proj, TemporalProjection):
            raise ValueError("a video-level distance needs model.temporal_embedding")

        def joined(features, proj):
            k = features.shape[0]
            steps = features.float().view(k, proj.channels, proj.time_steps).permute(1, 0, 2)
            return F.normalize(proj.sequence(steps.reshape(1, proj.channels, k * proj.time_steps)).float(), dim=1)

        return (joined(video_features, self.video_proj) - joined(audio_features, self.audio_proj)).norm()

    def distance_of(self, video_features: torch.Tensor, audio_features: torch.Tensor) -> torch.Tensor:
        """A video's distance from its K segments' stream features (K, C * T), in time order:
        `video_distance` (model.mds "video") or the mean segment distance (the paper's MDS)."""
        if self.mds == "video":
            return self.video_distance(video_features, audio_features)
        v = F.normalize(self.video_proj(video_features).float(), dim=1)
        a = F.normalize(self.audio_proj(audio_features).float(), dim=1)
        return (v - a).norm(dim=1).mean()

    def offset_curve(self, video_features: torch.Tensor, audio_windows: torch.Tensor) -> torch.Tensor:
        """(O,) the video's distance (`distance_of`) with its sound at each of O offsets:
        `video_features` (K, C * T) of its K segments in time order, `audio_windows`
        (O, K, 1, 13, W) each segment's MFCC window moved by each offset
        (`training.av_data.offset_windows`)."""
        o, k = audio_windows.shape[:2]
        per = max(1, 512 // max(1, k))  # offsets per pass of the audio stream: at most ~512 windows
        out = []
        for i in range(0, o, per):
            chunk = audio_windows[i:i + per]
            fa = self.audio(chunk.reshape(-1, *chunk.shape[2:]).float()).float().view(len(chunk), k, -1)
            out += [self.distance_of(video_features, f) for f in fa]
        return torch.stack(out)

    def offset_score(self, curve: torch.Tensor) -> tuple[float, float, float]:
        """(score, distance at offset 0, estimated offset s) of an `offset_curve` over
        `self.offsets`: score = distance at 0 - the smallest distance (>= 0). A positive
        estimated offset means the sound's best match lies later in the recording (the
        sound lags), a negative one earlier (it runs early); 0 wherever offset 0 ties
        with the smallest (a flat curve: sound without variation)."""
        zero, best = self.offsets.index(0.0), int(torch.argmin(curve))
        d0 = float(curve[zero])
        if d0 <= float(curve[best]):
            best = zero
        return d0 - float(curve[best]), d0, self.offsets[best]

    def probability(self, mds: torch.Tensor) -> torch.Tensor:
        """P(FAKE) of a video from its MDS, with the fitted calibration."""
        a, b = self.calibration
        return torch.sigmoid(a * (mds - b))


def search_offsets(spec: dict | None) -> tuple[float, ...]:
    """The offsets (s) of `model.offset_search` {"max_s": M, "step_s": S}: every multiple of S
    within +-M, 0 included; () for None."""
    if spec is None:
        return ()
    if (not isinstance(spec, dict) or set(spec) != {"max_s", "step_s"}
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec.values())):
        raise ValueError(f"model.offset_search must be {{\"max_s\": seconds, \"step_s\": seconds}} or null, got {spec!r}")
    m, step = float(spec["max_s"]), float(spec["step_s"])
    if not (0.01 <= step <= m <= 10.0):
        raise ValueError(f"model.offset_search needs 0.01 <= step_s <= max_s <= 10 (seconds; 10 ms is the MFCC "
                         f"step), got {spec!r}")
    n = int(math.floor(m / step + 1e-6))
    return tuple(round(i * step, 6) for i in range(-n, n + 1))


def contrastive_loss(distance: torch.Tensor, fake: torch.Tensor, margin: float = PAPER_MARGIN) -> torch.Tensor:
    """The paper's loss (y = 1 for a real segment): y d^2 + (1 - y) max(margin - d, 0)^2,
    averaged: a real segment's embeddings are pulled together, a fake's pushed apart."""
    real = 1.0 - fake.float().reshape(-1)
    d = distance.float().reshape(-1)
    return (real * d.pow(2) + (1 - real) * F.relu(margin - d).pow(2)).mean()


def mds_loss(out: MDSOutput, fake: torch.Tensor, margin: float = PAPER_MARGIN,
             weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
             stream_fake: torch.Tensor | None = None) -> torch.Tensor:
    """Contrastive + the two streams' cross-entropies, weighted (the paper: 1:1:1).

    `fake` is the segment's pairing label (the contrastive target); `stream_fake` the
    streams' own label for the cross-entropies, `fake` when not given (the paper: a
    DFDC video's label). A real segment given the wrong sound (`data.av_fake_prob`) is a
    fake pair of two real streams: stream_fake 0, or the stream heads would be taught that
    a real face and a real voice are fake."""
    y = fake.float().reshape(-1)
    s = y if stream_fake is None else stream_fake.float().reshape(-1).to(y.device)
    return (weights[0] * contrastive_loss(out.distance, y, margin)
            + weights[1] * F.binary_cross_entropy_with_logits(out.video_logit, s)
            + weights[2] * F.binary_cross_entropy_with_logits(out.audio_logit, s))
