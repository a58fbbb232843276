"""The lip-landmark stream of the dissonance model: `training.lips` (dlib's points per frame
-> numbers) and `training.zoo.mds.LipStream` (those numbers per segment -> features)."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import DEV_VIDEOS
from training.lips import (LANDMARK_SIZE, NUM_LIP_FEATURES, OUTER_OPENING, crop_landmarks, crops_lip_features,
                           face_box_fraction, lip_features, lip_opening)


def face68(open_by: float = 0.0) -> np.ndarray:
    """A hand-made 68-point face: eyes 40 px apart at y = 100, the lips two ellipses around
    (100, 140) (outer 48-59 and inner 60-67 in dlib's order), the lower lip `open_by` px
    below its resting place; the other points anywhere (the lips' numbers do not read them)."""
    rng = np.random.default_rng(0)
    p = rng.uniform(60, 140, (68, 2))
    p[36:42] = (80.0, 100.0) + rng.normal(0, 2, (6, 2))
    p[42:48] = (120.0, 100.0) + rng.normal(0, 2, (6, 2))
    outer, inner = np.pi - np.arange(12) * np.pi / 6, np.pi - np.arange(8) * np.pi / 4
    p[48:60] = np.stack([100 + 22 * np.cos(outer), 140 - 8 * np.sin(outer)], 1)
    p[60:68] = np.stack([100 + 15 * np.cos(inner), 140 - 3 * np.sin(inner)], 1)
    p[[55, 56, 57, 58, 59, 65, 66, 67], 1] += open_by
    return p


def turned(p: np.ndarray, angle: float, scale: float, shift) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return p @ np.array([[c, s], [-s, c]]) * scale + np.asarray(shift)


def test_lip_opening_is_the_outer_lips_gap_over_the_eyes_distance():
    points = np.zeros((68, 2))
    points[36:42] = (0.0, 0.0)  # one eye's centre at the origin, the other 10 px to the right
    points[42:48] = (10.0, 0.0)
    points[[50, 51, 52], 1] = 20.0  # the upper lip
    points[[58, 57, 56], 1] = (23.0, 24.0, 25.0)  # the lower lip: gaps 3, 4 and 5
    assert abs(lip_opening(points) - 0.4) < 1e-9
    assert abs(lip_opening(points * 2.5) - 0.4) < 1e-9  # the face's size does not matter
    points[[58, 57, 56], 1] = 20.0
    assert lip_opening(points) == 0.0  # closed
    assert lip_opening(np.zeros((68, 2))) == 0.0  # degenerate: no eyes' distance


def test_lip_features_ignore_the_faces_size_place_and_roll_but_see_the_mouth_open():
    p = face68()
    f = lip_features(p)
    assert f.shape == (NUM_LIP_FEATURES,) and f.dtype == np.float32
    for angle, scale, shift in [(0.3, 2.0, (5, -7)), (-0.5, 0.6, (100, 20)), (math.pi / 2, 1.0, (0, 0))]:
        np.testing.assert_allclose(lip_features(turned(p, angle, scale, shift)), f, atol=1e-5)
    np.testing.assert_allclose(f[:40].reshape(20, 2).mean(0), 0.0, atol=1e-6)  # relative to the lips' mean
    assert f[OUTER_OPENING] == pytest.approx(lip_opening(p), rel=1e-6)
    opened = lip_features(face68(open_by=8.0))
    assert opened[OUTER_OPENING] > f[OUTER_OPENING] + 0.1 and opened[OUTER_OPENING + 1] > f[OUTER_OPENING + 1] + 0.1
    # the opening also moves the lower lip's points, in their levelled y coordinates
    assert np.abs(opened[1:40:2] - f[1:40:2]).max() > 0.05
    p[42:48] = p[36:42].mean(0)  # the eyes meet: no scale to measure by
    assert lip_features(p) is None


def test_face_box_fraction_matches_the_crops_geometry():
    from training.augmentations import FACE_BOX_FRACTION

    assert face_box_fraction(1 / 3) == pytest.approx(FACE_BOX_FRACTION)  # step 1's crops
    lo, hi = face_box_fraction(0.15)  # the dissonance tracks'
    assert (hi - lo) * 1.3 == pytest.approx(1.0) and lo + hi == pytest.approx(1.0)


class RecordingPredictor:
    """Stands in for dlib: the face of `face68`, opened by the crop's mean grey level / 10 px;
    a crop whose mean is 0 gets points far outside it (an implausible fit). Records the
    images' shapes and the face rectangles it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, img, rect):
        self.calls.append((img.shape, (rect.left(), rect.top(), rect.right(), rect.bottom())))
        level = float(img.mean())
        points = face68(level / 10) if level > 0 else face68() + 1000.0
        return SimpleNamespace(parts=lambda: [SimpleNamespace(x=x, y=y) for x, y in points])


def test_crops_are_enlarged_fitted_in_their_face_box_and_gaps_repeat_the_last_fit():
    stub = RecordingPredictor()
    crops = [np.full((96, 96, 3), v, np.uint8) for v in (0, 30, 0, 60, 0)]
    feats, found = crops_lip_features(crops, 0.15, stub)
    assert found == 2 and feats.shape == (5, NUM_LIP_FEATURES)
    lo, hi = face_box_fraction(0.15)
    assert {c for c in stub.calls} == {((LANDMARK_SIZE, LANDMARK_SIZE, 3),
                                        (int(lo * LANDMARK_SIZE), int(lo * LANDMARK_SIZE),
                                         int(hi * LANDMARK_SIZE), int(hi * LANDMARK_SIZE)))}
    first, second = lip_features(face68(3.0)), lip_features(face68(6.0))
    for i, want in enumerate([first, first, first, second, second]):  # the first fit also fills before it
        np.testing.assert_allclose(feats[i], want, atol=1e-6)
    none, found = crops_lip_features(crops[::2], 0.15, stub)
    assert found == 0 and not none.any()
    big = crop_landmarks(np.full((256, 256, 3), 20, np.uint8), 0.15, stub)  # larger crops are not shrunk
    assert big is not None and stub.calls[-1][0] == (256, 256, 3)


# --------------------------------------------------------------------------- the stream
def lip_net(**kw):
    from training.zoo import create_model

    torch.manual_seed(0)
    return create_model("DissonanceNet", "lip_landmarks", pretrained=False, embedding=8, hidden=16, audio_channels=8,
                        time_steps=6, temporal_embedding=True, **kw)


def test_lip_stream_reads_how_the_lips_move_within_a_segment_not_their_resting_shape():
    net = lip_net().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, NUM_LIP_FEATURES, generator=g)
    with torch.no_grad():
        f = net.video(x)
        assert f.shape == (2, net.video.channels * 6)
        # a speaker's resting shape (a constant per feature over the segment) changes nothing
        torch.testing.assert_close(net.video(x + torch.randn(2, 1, NUM_LIP_FEATURES, generator=g)), f)
        out = net(x, torch.randn(2, 1, 13, 100, generator=g))
        assert out.distance.shape == (2,) and torch.isfinite(out.distance).all()
        moved = x.clone()
        moved[:, 3, OUTER_OPENING] += 2.0
        assert not torch.allclose(net.video(moved), f)
    assert all(p.requires_grad for p in net.video.parameters())
    with pytest.raises(ValueError, match="lip features"):
        net.video(torch.zeros(2, 6, 3, 32, 32))  # crops: the stream never sees pixels
    with pytest.raises(ValueError, match="region"):
        lip_net(region="mouth")


def test_lip_config_builds_fingerprints_and_refuses_options_that_change_the_crops():
    from test_mds import mds_cfg

    from conftest import REPO
    from training import fingerprint
    from training.config import ConfigError, load_config
    from training.engine import build_model

    for cfg in (mds_cfg(encoder="lip_landmarks", size=48,
                        model={"time_steps": 4, "temporal_embedding": True, "mds": "video"}),
                load_config(REPO / "configs" / "mds_lips_cpu.json")):
        torch.manual_seed(0)
        net = build_model(cfg).eval()
        record = fingerprint.make(net, cfg)
        assert len(record["logits"]) == 3 and all(math.isfinite(v) for v in record["logits"])
        assert fingerprint.verify(net, cfg, record, "x") == 0.0
        with torch.no_grad():
            net.video.net[0].weight.mul_(-1.0)  # the fingerprint reaches the lip stream's weights
        with pytest.raises(fingerprint.FingerprintError):
            fingerprint.verify(net, cfg, record, "x")
    for data in ({"av_augment": True}, {"frame_features": True}):
        with pytest.raises(ConfigError, match="lip_landmarks"):
            mds_cfg(encoder="lip_landmarks", size=48, model={"time_steps": 4}, data=data)


def test_lip_stream_learns_which_sound_goes_with_the_lips_in_a_few_steps():
    """The loss's sign for this stream: a segment whose lips open with the sound's loudness
    ends closer to its own sound than to a shifted one after a few Adam steps."""
    from training.zoo.mds import mds_loss

    net = lip_net()
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(net.parameters(), 3e-3)

    def batch(n=16):
        loud = torch.rand(n, 6, generator=g)  # the loudness of each of 6 frames' stretch of sound
        lips = torch.zeros(n, 6, NUM_LIP_FEATURES)
        lips[:, :, OUTER_OPENING] = loud + 0.05 * torch.randn(n, 6, generator=g)
        own = loud.repeat_interleave(17, 1)[:, None, None, :100].expand(n, 1, 13, 100).clone()
        other = own.roll(1, 0)
        return lips, own, other

    for _ in range(60):
        lips, own, other = batch()
        x, a = torch.cat([lips, lips]), torch.cat([own, other])
        y = torch.cat([torch.zeros(len(lips)), torch.ones(len(lips))])
        loss = mds_loss(net(x, a), y, margin=0.99, stream_fake=torch.zeros_like(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    lips, own, other = batch(64)
    with torch.no_grad():
        assert (net(lips, own).distance < net(lips, other).distance).float().mean() > 0.8


GRID_CLIPS = ("brbk7n.mpg", "lrwp9a.mpg", "sbwe5n.mpg")


@pytest.mark.slow
@pytest.mark.skipif(not all((DEV_VIDEOS / "real_talking_heads" / c).exists() for c in GRID_CLIPS),
                    reason="dev-videos' GRID clips not found")
def test_on_real_talking_heads_the_lips_open_with_their_own_sound_not_a_shifted_one():
    """dlib fits every frame of 6_predict's 96-px crops of three GRID speakers, and the outer
    lips' opening rises and falls with the sound's loudness (MFCC 0, the same 40 ms), far
    less so with the sound 0.6 s later: the cue the lip-landmark stream learns from."""
    from inference.predictor import FaceExtractor
    from training.av_data import mfcc_window

    key = (96, 0.15, 1.0, 25)
    extract = FaceExtractor(num_frames=4, margins=(0.15,), av_segments=[(25, 96, 0.15, 1.0)], detect_every=1)
    for name in GRID_CLIPS:
        faces = extract(DEV_VIDEOS / "real_talking_heads" / name)
        segs = faces.segments[key]
        crops = [c for _, seg in segs for c in seg]
        feats, found = crops_lip_features(crops, 0.15)
        assert found == len(crops) == 50
        opening = feats[:, OUTER_OPENING]
        loud = np.concatenate([mfcc_window(faces.mfcc, s)[0].reshape(25, 4).mean(1) for s, _ in segs])
        synced, shifted = np.corrcoef(opening, loud)[0, 1], np.corrcoef(opening[:-15], loud[15:])[0, 1]
        assert synced > 0.3 and synced > shifted + 0.3, (name, synced, shifted)
