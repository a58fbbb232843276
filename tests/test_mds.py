"""Audio-visual dissonance (Chugh et al., MDS): the model, its loss, calibration and config."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import ConfigError, validate
from training.zoo import DissonanceNet, create_model
from training.zoo.mds import contrastive_loss, mds_loss


def mds_cfg(**over):
    cfg = {"name": "tinymds", "task": "av", "network": "DissonanceNet", "encoder": "r3d_18", "pretrained": False,
           "size": 32, "margin": 0.15, "batches_per_epoch": 4, "dropout": 0.5,
           "model": {"embedding": 32, "hidden": 64, "audio_channels": 8},
           "optimizer": {"type": "Adam", "batch_size": 4, "learning_rate": 1e-3, "weight_decay": 1e-5,
                         "schedule": {"type": "constant", "epochs": 1}},
           "losses": {"MDS": 1},
           "data": {"dataset": "av_segments", "seq_len": 4, "av_fake_prob": 0.5, "hardcore": False, "workers": 0}}
    for k, v in over.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    return validate(cfg)


def tiny_net(**kw):
    torch.manual_seed(0)
    return create_model("DissonanceNet", "r3d_18", pretrained=False, embedding=32, hidden=64, audio_channels=8, **kw)


def test_two_streams_give_a_distance_and_a_logit_each_per_segment():
    net = tiny_net().eval()
    assert isinstance(net, DissonanceNet)
    out = net(torch.randn(3, 4, 3, 32, 32), torch.randn(3, 1, 13, 100))
    assert out.distance.shape == out.video_logit.shape == out.audio_logit.shape == (3,)
    assert out.video_embedding.shape == out.audio_embedding.shape == (3, 32)
    torch.testing.assert_close(out.video_embedding.norm(dim=1), torch.ones(3))  # unit embeddings:
    assert bool(((out.distance >= 0) & (out.distance <= 2)).all())                # distances in [0, 2]
    with pytest.raises(ValueError, match="B, T, 3, H, W"):
        net(torch.randn(3, 3, 32, 32), torch.randn(3, 1, 13, 100))
    with pytest.raises(ValueError, match="time_steps"):
        DissonanceNet("resnet18")  # a 2D encoder runs per frame: it must be told how many steps to keep
    with pytest.raises(RuntimeError, match="Unknown model"):
        DissonanceNet("no_such_net", time_steps=4)


def test_mouth_region_is_the_lower_middle_of_the_crop_and_bad_regions_are_refused():
    from training.zoo.mds import MOUTH_REGION, region_rows_cols

    rows, cols = region_rows_cols((96, 96), MOUTH_REGION)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (48, 91, 19, 77)
    assert region_rows_cols((32, 48), None) == (slice(0, 32), slice(0, 48))
    mouth, face = tiny_net(region="mouth").eval(), tiny_net().eval()
    face.load_state_dict(mouth.state_dict())  # same weights: only what the visual stream sees differs
    clip, audio = torch.randn(2, 4, 3, 96, 96), torch.randn(2, 1, 13, 100)
    torch.testing.assert_close(mouth(clip, audio).video_embedding,
                               face(clip[..., 48:91, 19:77].contiguous(), audio).video_embedding)
    torch.testing.assert_close(mouth(clip, audio).audio_embedding, face(clip, audio).audio_embedding)
    for bad in ("lips", [0.5, 0.4, 0.2, 0.8], [0.0, 1.2, 0.0, 1.0]):
        with pytest.raises(ValueError, match="model.region"):
            tiny_net(region=bad)


def test_time_steps_keep_the_time_axis_in_both_streams():
    """model.time_steps T: r3d_18's layers 2-4 stride over space only and both streams pool
    to T steps, so features are (B, C * T) in temporal order; null pools over time (the paper)."""
    pooled, timed = tiny_net().eval(), tiny_net(time_steps=4).eval()
    clip, audio = torch.randn(2, 4, 3, 32, 32), torch.randn(2, 1, 13, 100)
    assert pooled.video(clip).shape == (2, 512) and pooled.audio(audio).shape == (2, 32)
    assert timed.video(clip).shape == (2, 512 * 4) and timed.audio(audio).shape == (2, 32 * 4)
    for layer in (timed.video.net.layer2, timed.video.net.layer3, timed.video.net.layer4):
        assert layer[0].conv1[0].stride == (1, 2, 2) and layer[0].downsample[0].stride == (1, 2, 2)
    assert pooled.video.net.layer2[0].conv1[0].stride == (2, 2, 2)
    # the audio features of the first half of the second come from its first half of MFCCs only
    # (up to the receptive field at the middle): changing the last quarter leaves step 0 alone
    later = audio.clone()
    later[..., 75:] = torch.randn(2, 1, 13, 25)
    with torch.no_grad():
        f, g = timed.audio(audio).view(2, 32, 4), timed.audio(later).view(2, 32, 4)
    torch.testing.assert_close(f[..., 0], g[..., 0])
    assert not torch.allclose(f[..., 3], g[..., 3])
    assert timed(clip, audio).distance.shape == (2,)
    for bad in (0, 2.5, True, "8"):
        with pytest.raises(ValueError, match="model.time_steps"):
            tiny_net(time_steps=bad)


def train_then_measure(net, batch, steps: int, n_eval: int):
    """`steps` Adam steps (lr 1e-3) of mds_loss on batch() with REAL stream labels (wrong-sound
    pairs of real streams), then the eval-mode distances and labels of a fresh batch(n_eval)."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        v, a, y = batch()
        loss = mds_loss(net(v, a), y, stream_fake=torch.zeros_like(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    v, a, y = batch(n_eval)
    with torch.no_grad():
        return net(v, a).distance, y


def frame_net(encoder="tf_efficientnet_lite0", **kw):
    """A small DissonanceNet with a per-frame visual stream on the mouth and temporal embeddings."""
    torch.manual_seed(0)
    kw = {"region": "mouth", "time_steps": 4, "temporal_embedding": True, "frame_size": 32, **kw}
    return create_model("DissonanceNet", encoder, pretrained=False, embedding=8, hidden=16, audio_channels=8, **kw)


def test_frame_stream_runs_a_frozen_2d_encoder_on_each_frames_mouth():
    """The CPU recipe's visual stream: a frozen 2D encoder per frame (its ImageNet batch
    norms stay in eval mode while the rest trains), features in time order."""
    net = frame_net()
    enc = net.video.encoder
    assert not any(p.requires_grad for p in enc.parameters())
    assert all(p.requires_grad for n, p in net.named_parameters() if not n.startswith("video.encoder."))
    net.train()
    assert net.training and not enc.training
    stats = {k: v.clone() for k, v in enc.state_dict().items() if "running" in k}
    clip, audio = torch.randn(2, 4, 3, 48, 48), torch.randn(2, 1, 13, 100)
    out = net(clip, audio)
    out.distance.sum().backward()
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in stats.items())
    assert all(p.grad is None for p in enc.parameters())
    net.eval()
    c = enc.num_features
    with torch.no_grad():
        f = net.video(clip)
        assert f.shape == (2, c * 4)
        # per frame: reversing the frames reverses the features in time
        torch.testing.assert_close(net.video(clip.flip(1)).view(2, c, 4), f.view(2, c, 4).flip(2))
        # the mouth only: pixels above it change nothing
        other = clip.clone()
        other[..., :20, :] = torch.randn(2, 4, 3, 20, 48)
        torch.testing.assert_close(net.video(other), f)


def test_temporal_embedding_keeps_time_and_removes_its_mean():
    """model.temporal_embedding: embeddings are (E x T) with each channel's mean over the
    segment removed, unit norm, so that their distance depends on how the two streams
    co-vary over the segment, not on their levels; it needs time_steps."""
    net = frame_net().eval()
    with torch.no_grad():
        out = net(torch.randn(3, 4, 3, 48, 48), torch.randn(3, 1, 13, 100))
    assert out.video_embedding.shape == out.audio_embedding.shape == (3, 8 * 4)
    for e in (out.video_embedding, out.audio_embedding):
        torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
        torch.testing.assert_close(e.view(3, 8, 4).mean(2), torch.zeros(3, 8), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="time_steps"):
        tiny_net(temporal_embedding=True)


def test_temporal_embedding_learns_which_sound_goes_with_the_mouth_in_a_few_steps():
    """Synced pairs: the frames' brightness and the MFCCs follow the same random curve over
    the second; wrong pairs hear the curve backwards: the same sounds in the wrong order,
    which only timing tells apart. The r3d_18 stream with time kept and the temporal
    embedding learns to separate them in a few steps."""
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(0)
    net = tiny_net(time_steps=8, temporal_embedding=True)
    g = torch.Generator().manual_seed(1)

    def batch(n=16):
        knots = torch.randn(n, 1, 5, generator=g)
        s = torch.nn.functional.interpolate(knots, size=100, mode="linear", align_corners=True).view(n, 100)
        video = s[:, 6::12].reshape(n, 8, 1, 1, 1) * torch.ones(n, 8, 3, 32, 32)
        video = video + 0.2 * torch.randn(n, 8, 3, 32, 32, generator=g)
        fake = torch.zeros(n)
        fake[n // 2:] = 1
        heard = s.clone()
        heard[n // 2:] = heard[n // 2:].flip(1)  # the wrong sound: backwards
        audio = heard.view(n, 1, 1, 100) * torch.ones(n, 1, 13, 100) + 0.2 * torch.randn(n, 1, 13, 100, generator=g)
        return video, audio, fake

    d, y = train_then_measure(net, batch, steps=40, n_eval=64)
    assert roc_auc_score(y.numpy(), d.numpy()) > 0.85


def motion_net(**kw):
    return frame_net("mouth_motion", **{"time_steps": 6, "frame_size": 16, **kw})


def test_motion_stream_sees_how_the_mouth_moves_not_what_it_looks_like():
    """encoder "mouth_motion": the visual stream is a function of the mouth region's frame
    differences only. Two still clips of different faces give the same features; a
    brightness offset, the same over time, changes nothing; moving the mouth does; pixels
    above the mouth are never seen; it trains (random init), needs time_steps."""
    net = motion_net().eval()
    assert all(p.requires_grad for p in net.video.parameters())
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 1, 3, 48, 48, generator=g).expand(2, 6, 3, 48, 48).clone()
    b = torch.rand(1, 1, 3, 48, 48, generator=g).expand(2, 6, 3, 48, 48).clone()
    with torch.no_grad():
        still = net.video(a)
        assert still.shape == (2, net.video.channels * 6)
        torch.testing.assert_close(net.video(b), still)
        moving = a.clone()
        moving[:, 3:, :, 30:, 15:35] += 0.5  # the mouth opens at frame 3
        f = net.video(moving)
        assert not torch.allclose(f, still)
        torch.testing.assert_close(net.video(moving + 0.3), f, atol=1e-5, rtol=1e-5)
        other = moving.clone()
        other[..., :20, :] = torch.randn(2, 6, 3, 20, 48, generator=g)
        torch.testing.assert_close(net.video(other), f)
        # the change shows at the step where it happens: steps 0-2 and 4-5 are those of a still clip
        steps = f.view(2, -1, 6) - still.view(2, -1, 6)
        assert steps[..., 3].abs().max() > 1e-3
        assert steps[..., [0, 1, 2, 4, 5]].abs().max() < 1e-5
    with pytest.raises(ValueError, match="time_steps"):
        create_model("DissonanceNet", "mouth_motion", pretrained=False, embedding=8, hidden=16, audio_channels=8)


def test_video_level_distance_joins_segments_in_time_order():
    """model.mds "video": one distance over the video's segments joined in time. For one
    segment it is that segment's own distance; validation (av_metrics) joins each video's
    segments by start time, whatever order they came in, and fits the calibration on it;
    it needs temporal embeddings."""
    from training.engine import av_metrics

    net = motion_net(mds="video").eval()
    g = torch.Generator().manual_seed(3)
    clip, audio = torch.rand(6, 6, 3, 48, 48, generator=g), torch.randn(6, 1, 13, 100, generator=g)
    with torch.no_grad():
        out = net(clip, audio)
        for i in range(6):
            torch.testing.assert_close(net.video_distance(out.video_features[i:i + 1], out.audio_features[i:i + 1]),
                                       out.distance[i])
        joined = [float(net.video_distance(out.video_features[k:k + 3], out.audio_features[k:k + 3]))
                  for k in (0, 3)]
        shuffled = float(net.video_distance(out.video_features[[2, 0, 1]], out.audio_features[[2, 0, 1]]))
    assert abs(shuffled - joined[0]) > 1e-4  # order matters: the time axis is joined
    assert joined != pytest.approx(out.distance.view(2, 3).mean(1).tolist(), abs=1e-4)  # not the mean
    order = [4, 1, 0, 5, 3, 2]  # as a loader might deliver them
    names = ["b" if i >= 3 else "a" for i in order]
    steps = [(float(i % 3), out.video_features[i].numpy(), out.audio_features[i].numpy()) for i in order]
    m = av_metrics(net, names, [1.0 if n == "b" else 0.0 for n in names], out.distance[order].tolist(), steps)
    assert [m["mds_real"], m["mds_fake"]] == pytest.approx([joined[0], joined[1]], abs=1e-5)
    with pytest.raises(ValueError, match="temporal_embedding"):
        tiny_net(mds="video")
    with pytest.raises(ValueError, match="model.mds"):
        motion_net(mds="mean")


def test_offset_windows_move_each_segments_sound_and_pad_at_the_edges():
    """offset_windows: each segment's MFCC window moved by each offset; at offset 0 the
    window training and prediction use (mfcc_window); before the sound's start the first
    row repeats, past its end the last."""
    from training.av_data import mfcc_window, offset_windows

    feats = np.random.default_rng(0).normal(size=(300, 13)).astype(np.float32)  # 3 s
    offsets = (-0.5, -0.08, 0.0, 0.4)
    w = offset_windows(feats, [0.0, 1.0, 2.0], offsets)
    assert w.shape == (4, 3, 1, 13, 100)
    for i, d in enumerate(offsets):
        for k, s in enumerate((0.0, 1.0, 2.0)):
            if s + d >= 0:
                np.testing.assert_array_equal(w[i, k, 0], mfcc_window(feats, s + d))
    np.testing.assert_array_equal(w[0, 0, 0, :, :50], np.repeat(feats[:1].T, 50, 1))  # 0.5 s before the start
    np.testing.assert_array_equal(w[0, 0, 0, :, 50:], feats[:50].T)
    np.testing.assert_array_equal(w[3, 2, 0, :, 60:], np.repeat(feats[-1:].T, 40, 1))  # past the end


def test_offset_search_grid_and_bad_specs():
    from training.zoo.mds import search_offsets

    grid = search_offsets({"max_s": 1.2, "step_s": 0.08})
    assert len(grid) == 31 and grid[15] == 0.0 and grid[0] == -1.2 and grid[-1] == 1.2
    assert grid == tuple(-x for x in reversed(grid))
    assert search_offsets({"max_s": 0.5, "step_s": 0.2}) == (-0.4, -0.2, 0.0, 0.2, 0.4)
    assert search_offsets(None) == ()
    for bad in ({"max_s": 1.0}, {"max_s": 0.0, "step_s": 0.1}, {"max_s": 0.1, "step_s": 0.2}, [1.0, 0.1],
                {"max_s": 1.0, "step_s": 0.1, "extra": 1}, {"max_s": "1.2", "step_s": 0.08},
                {"max_s": True, "step_s": 0.5}, {"max_s": float("inf"), "step_s": 0.1},
                {"max_s": float("nan"), "step_s": 0.1}, {"max_s": 1.0, "step_s": 0.005}):
        with pytest.raises(ValueError, match="offset_search"):
            search_offsets(bad)
    with pytest.raises(ValueError, match="offset_search"):
        motion_net(mds="video", offset_search={"max_s": -1, "step_s": 0.1})


@pytest.mark.parametrize("mds", ["video", "segments"])
def test_offset_curve_moves_with_the_sound_and_scores_against_the_best_alignment(mds):
    """model.offset_search: the curve's offset-0 entry is the video's plain distance
    (distance_of); advancing the sound by s moves the whole curve by s (away from the clip's
    edges), so the score of the advanced copy is its distance at 0 above the minimum, found
    at -s: the estimated offset."""
    from training.av_data import mfcc_window, offset_windows

    net = motion_net(mds=mds, offset_search={"max_s": 0.48, "step_s": 0.08}).eval()
    offsets = net.offsets
    g = torch.Generator().manual_seed(5)
    clip = torch.rand(3, 6, 3, 48, 48, generator=g)
    feats = np.random.default_rng(1).normal(size=(800, 13)).astype(np.float32)  # 8 s
    starts = [2.0, 3.0, 4.0]  # inner seconds: no offset reaches an edge
    shift = 0.24
    advanced = feats[int(round(shift * 100)):]  # the sound 0.24 s early, as bench/dissonance's fakes
    with torch.no_grad():
        fv = net.video(clip)
        curve = net.offset_curve(fv, torch.from_numpy(offset_windows(feats, starts, offsets)))
        moved = net.offset_curve(fv, torch.from_numpy(offset_windows(advanced, starts, offsets)))
        fa = net.audio(torch.stack([torch.from_numpy(mfcc_window(feats, s)).unsqueeze(0) for s in starts]))
        torch.testing.assert_close(curve[offsets.index(0.0)], net.distance_of(fv, fa))
    k = int(round(shift / 0.08))  # moved(d) = curve(d + shift)
    torch.testing.assert_close(moved[:len(offsets) - k], curve[k:])
    score, d0, est = net.offset_score(moved)
    assert d0 == pytest.approx(float(moved[offsets.index(0.0)]))
    assert score == pytest.approx(d0 - float(moved.min())) and score >= 0
    assert est == offsets[int(torch.argmin(moved))]
    # a curve whose minimum is at 0 scores 0 and estimates no offset; so does a tie with 0
    net.offsets = (-0.16, -0.08, 0.0, 0.08, 0.16)
    assert net.offset_score(torch.tensor([0.9, 0.7, 0.2, 0.6, 0.8])) == (0.0, pytest.approx(0.2), 0.0)
    assert net.offset_score(torch.full((5,), 0.3)) == (0.0, pytest.approx(0.3), 0.0)  # sound without variation
    assert net.offset_score(torch.tensor([0.2, 0.5, 0.2, 0.6, 0.8])) == (0.0, pytest.approx(0.2), 0.0)
    assert net.offset_score(torch.tensor([0.9, 0.1, 0.2, 0.6, 0.8])) == (pytest.approx(0.1), pytest.approx(0.2), -0.08)


def test_offset_curve_in_chunks_equals_one_offset_at_a_time():
    """offset_curve passes at most ~512 windows through the audio stream at once (a long
    video in validation); the curve is the same as one offset at a time."""
    net = motion_net(mds="video").eval()
    g = torch.Generator().manual_seed(7)
    fv = net.video(torch.rand(4, 6, 3, 48, 48, generator=g)).detach()
    windows = torch.randn(300, 4, 1, 13, 100, generator=g)  # 1,200 windows: three passes
    with torch.no_grad():
        curve = net.offset_curve(fv, windows)
        one = torch.stack([net.offset_curve(fv, windows[i:i + 1])[0] for i in range(0, 300, 37)])
    assert curve.shape == (300,)
    torch.testing.assert_close(curve[::37], one, atol=1e-5, rtol=1e-5)


def test_offset_search_finds_the_shift_of_a_sound_that_runs_early():
    """The sign convention, with streams that match exactly at the true alignment (the audio
    stream the identity, the distance Euclidean, the video's features its own sound): the
    synced copy scores 0 at offset 0; the copy whose sound runs 0.24 s early is found at
    -0.24 s and scores its distance at 0 above that."""
    from training.av_data import offset_windows

    net = motion_net(mds="video", offset_search={"max_s": 0.48, "step_s": 0.08}).eval()
    net.audio = torch.nn.Flatten()
    net.distance_of = lambda v, a: (v - a).norm()
    feats = np.random.default_rng(2).normal(size=(800, 13)).astype(np.float32)
    starts = [2.0, 3.0, 4.0]
    fv = torch.from_numpy(offset_windows(feats, starts, (0.0,))[0]).flatten(1)  # what the mouth says
    for shift in (0.0, 0.24, -0.4):
        first = int(round(shift * 100))
        sound = feats[first:] if first >= 0 else np.concatenate([np.zeros((-first, 13), np.float32), feats])
        with torch.no_grad():
            curve = net.offset_curve(fv, torch.from_numpy(offset_windows(sound, starts, net.offsets)))
        score, d0, est = net.offset_score(curve)
        assert est == pytest.approx(-shift)
        assert (score == 0.0) == (shift == 0.0) and score == pytest.approx(d0)  # the best alignment: distance 0


def test_validation_scores_offset_search_on_each_segments_own_sound(tmp_path):
    """av_metrics with model.offset_search: a video's MDS is offset_score of the curve built
    from each segment's wav and sound start (a clone's wrong sound included), and the
    calibration is fitted on those scores."""
    import wave

    from training.av_data import _video_mfcc, offset_windows
    from training.engine import av_metrics

    net = motion_net(mds="video", offset_search={"max_s": 0.4, "step_s": 0.2}).eval()
    wavs = []
    for i in range(2):
        x = (np.random.default_rng(i).normal(size=16000 * 4) * 3000).astype(np.int16)
        path = tmp_path / f"v{i}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(x.tobytes())
        wavs.append(str(path))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        fv = net.video(torch.rand(4, 6, 3, 48, 48, generator=g)).numpy()
    fa = np.zeros_like(fv)  # not used with offset_search: the sound is re-read from the wav
    # video "a" (REAL): its own sound; "a+wrong_audio" (FAKE): its sound 0.6 s later; given out of order
    steps = [(1.0, fv[1], fa[1], wavs[0], 1.0), (0.0, fv[0], fa[0], wavs[0], 0.0),
             (1.0, fv[3], fa[3], wavs[1], 1.6), (0.0, fv[2], fa[2], wavs[1], 0.6)]
    names = ["a", "a", "a+wrong_audio", "a+wrong_audio"]
    with pytest.raises(ValueError, match="segment length"):
        av_metrics(net, names, [0.0, 0.0, 1.0, 1.0], [0.5] * 4, steps)
    m = av_metrics(net, names, [0.0, 0.0, 1.0, 1.0], [0.5] * 4, steps, segment_s=1.0)
    want = []
    with torch.no_grad():
        for ix, wav, starts in (([0, 1], wavs[0], [0.0, 1.0]), ([2, 3], wavs[1], [0.6, 1.6])):
            curve = net.offset_curve(torch.from_numpy(fv[ix]),
                                     torch.from_numpy(offset_windows(_video_mfcc(wav)[0], starts, net.offsets)))
            want.append(net.offset_score(curve)[0])
    assert [m["mds_real"], m["mds_fake"]] == pytest.approx(want, abs=1e-5)
    assert m["calibration"] == pytest.approx(net.calibration.tolist())


def test_segment_plan_cuts_each_models_segment_length_within_the_video():
    """data.av_segment_s: prediction cuts consecutive whole segments of each model's length
    within the first max_segments seconds, the frames spread over each segment."""
    from types import SimpleNamespace

    from inference.predictor import FaceExtractor

    ext = FaceExtractor(av_segments=[(5, 48, 0.15, 1.0), (10, 48, 0.15, 2.0), (4, 48, 0.15, 1.0)], max_segments=10)
    reader = SimpleNamespace(info=SimpleNamespace(fps=25.0, frame_count=130))  # 5.2 s
    plans = ext.segment_plan(reader, duration=4.9)  # the sound ends first
    assert sorted(plans) == [(1.0, 4), (1.0, 5), (2.0, 10)]  # one plan per (length, frames) a model asks for
    assert [s for s, _ in plans[(1.0, 5)]] == [0, 1, 2, 3] and [s for s, _ in plans[(2.0, 10)]] == [0, 2]
    for (length, per), plan in plans.items():
        for start, frames in plan:
            assert len(frames) == per
            assert all(start * 25 <= f < (start + length) * 25 for f in frames) and frames == sorted(frames)
    # each count is training's own choice, not a subset of another's: 4 a second at 25 fps
    assert [f for f in plans[(1.0, 4)][1][1]] == [25, 31, 37, 44]  # nearest to 1, 1.25, 1.5, 1.75 s (ties: earlier)
    assert [s for s, _ in FaceExtractor(av_segments=[(4, 48, 0.15, 2.0)], max_segments=3)
            .segment_plan(reader, 4.9)[(2.0, 4)]] == [0]
    # training's own cut (preprocessing.audio.segments, its 10 ms of slack included): a sound
    # track 5 ms short of 3 s still has its third second, as the training tracks have it
    from preprocessing.audio import segments

    three = SimpleNamespace(info=SimpleNamespace(fps=25.0, frame_count=75))
    plan = FaceExtractor(av_segments=[(5, 48, 0.15, 1.0)]).segment_plan(three, duration=2.995)[(1.0, 5)]
    assert plan == [(s.start, list(s.frames)) for s in segments(np.arange(75) / 25, 2.995, 1.0, 5)]
    assert [s for s, _ in plan] == [0, 1, 2]


@pytest.fixture(scope="module")
def timed_videos(tmp_path_factory):
    """Small silent H.264 videos with B-frames (libx264's veryfast preset; ultrafast has none):
    25 fps for 4 s, and a variable rate (1.2 s at 25 fps, then 3 s at 15 fps: 30 + 45 frames)
    as MP4 (exact frame count) and MKV (whose count OpenCV only estimates from the duration,
    at 1000 fps: 4200)."""
    import subprocess

    from preprocessing.video import ffmpeg_exe

    d = tmp_path_factory.mktemp("timed_videos")
    def src(rate, seconds):
        return ["-f", "lavfi", "-i", f"testsrc=size=64x64:rate={rate}:duration={seconds}"]

    x264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    vfr = [*src(25, 1.2), *src(15, 3), "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0[v]", "-map", "[v]",
           "-fps_mode", "vfr"]
    out = {"cfr": d / "cfr.mp4", "vfr_mp4": d / "vfr.mp4", "vfr_mkv": d / "vfr.mkv"}
    for name, args in (("cfr", src(25, 4)), ("vfr_mp4", vfr), ("vfr_mkv", vfr)):
        subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args, *x264, str(out[name])], check=True)
    return out


def test_packet_times_are_the_decoded_frames_times_without_decoding(timed_videos, tmp_path):
    """preprocessing.audio.packet_times: the demuxed packets' times, sorted into presentation
    order, are frame_times' (B-frames come out of the demuxer out of order)."""
    import av  # noqa: F401  (after cv2, which the project imports first)

    from preprocessing.audio import frame_times, packet_times
    from preprocessing.video import VideoReadError

    with av.open(str(timed_videos["cfr"])) as c:
        pts = [p.pts for p in c.demux(c.streams.video[0]) if p.pts is not None]
    assert pts != sorted(pts)  # the file does hold B-frames: decoding order is not presentation order
    for path in timed_videos.values():
        times = packet_times(path)
        np.testing.assert_allclose(times, frame_times(path), rtol=0, atol=1e-6)
    np.testing.assert_allclose(packet_times(timed_videos["cfr"]), np.arange(100) / 25, rtol=0, atol=1e-6)
    vfr = packet_times(timed_videos["vfr_mp4"])
    np.testing.assert_allclose(vfr[[0, 29, 30, 31, 74]], [0, 29 / 25, 1.2, 1.2 + 1 / 15, 1.2 + 44 / 15], atol=1e-6)
    (tmp_path / "empty.mp4").touch()
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    for bad, why in (("missing.mp4", "not found"), ("empty.mp4", "empty"), ("junk.mp4", "cannot read")):
        with pytest.raises(VideoReadError, match=why):
            packet_times(tmp_path / bad)


def test_segment_plan_takes_trainings_frames_nearest_each_time(timed_videos):
    """Prediction picks each segment's frames by training's rule (frames_at: the frame nearest
    to start + j / n, ties the earlier), not half a step later at the nominal rate: at 25 fps
    and 8 frames a second, 0 3 6 9 12 16 19 22 (the old plan took 1 4 7 10 14 17 20 23)."""
    from inference.predictor import FaceExtractor
    from preprocessing.audio import frame_times
    from preprocessing.video import FrameReader
    from training.av_data import frames_at

    path = timed_videos["cfr"]
    plan = FaceExtractor(av_segments=[(8, 48, 0.15, 1.0)], max_segments=10).segment_plan(FrameReader(path), 3.5)
    assert [s for s, _ in plan[(1.0, 8)]] == [0, 1, 2]  # whole seconds of the 3.5 s of sound
    assert plan[(1.0, 8)][0][1] == [0, 3, 6, 9, 12, 16, 19, 22]
    assert plan[(1.0, 8)][2][1] == [50, 53, 56, 59, 62, 66, 69, 72]
    times = frame_times(path)
    assert all(frames == list(frames_at(times, start, 8, 1.0)) for start, frames in plan[(1.0, 8)])


@pytest.mark.parametrize("name", ["vfr_mp4", "vfr_mkv"])
def test_segment_plan_follows_presentation_times_at_a_variable_frame_rate(timed_videos, name):
    """A variable-rate video: the frames are those shown at each time (frame_times, as the
    training tracks have them), not those of the nominal rate (the MP4's average 18 fps is
    0.3 s late by 3 s). The MKV declares no frame count (OpenCV's is an estimate): its
    packets' times are taken, the same as frame_times'."""
    from inference.predictor import FaceExtractor
    from preprocessing.audio import frame_times, video_end
    from preprocessing.video import FrameReader
    from training.av_data import frames_at

    path = timed_videos[name]
    reader = FrameReader(path)
    times = frame_times(path)
    assert abs(video_end(times) - 4.2) < 2e-3 and len(times) == 75  # 30 frames at 25 fps, 45 at 15 fps
    plan = FaceExtractor(av_segments=[(5, 48, 0.15, 1.0)], max_segments=10).segment_plan(reader, 6.0)
    assert [s for s, _ in plan[(1.0, 5)]] == [0, 1, 2, 3]  # the picture ends at 4.2 s, before the sound
    nominal = np.arange(reader.info.frame_count) / reader.info.fps
    for start, frames in plan[(1.0, 5)]:
        assert frames == list(frames_at(times, start, 5, 1.0))
        targets = start + np.arange(5) / 5
        assert np.all(np.abs(times[frames] - targets) < 2e-3)  # the frame shown at each time (MKV: ms)
    assert plan[(1.0, 5)][0][1] == [0, 5, 10, 15, 20] and plan[(1.0, 5)][3][1] == [57, 60, 63, 66, 69]  # 3 s: 30 + 1.8 * 15
    assert any(frames != list(frames_at(nominal, start, 5, 1.0)) for start, frames in plan[(1.0, 5)])


def test_presentation_times_trust_packets_only_when_they_match_the_frame_count(timed_videos, monkeypatch):
    """inference.predictor.presentation_times: the packets' times when their number is the
    container's frame count (within COUNT_SLACK) or the container declares none; a decode
    (frame_times) when they disagree with a declared count; the nominal rate for a reader
    without a readable file."""
    from types import SimpleNamespace

    import preprocessing.audio as audio
    from inference.predictor import COUNT_SLACK, presentation_times

    path = timed_videos["vfr_mp4"]
    n = len(audio.packet_times(path))
    decoded = []
    monkeypatch.setattr(audio, "frame_times", lambda p: decoded.append(p) or np.zeros(3))

    def reader(count, p=path, fps=17.0):
        return SimpleNamespace(path=p, info=SimpleNamespace(fps=fps, frame_count=count))

    assert len(presentation_times(reader(n + COUNT_SLACK))) == n and not decoded
    assert len(presentation_times(reader(n - COUNT_SLACK - 1))) == 3 and decoded == [path]
    # an MKV declares no frame count (OpenCV's is an estimate: 1000 fps, thousands of
    # frames at a variable rate): its packets are trusted, nothing is decoded twice
    mkv = timed_videos["vfr_mkv"]
    assert audio.declared_frame_count(mkv) == 0 and audio.declared_frame_count(path) > 0
    assert len(presentation_times(reader(4200, mkv, 1000.0))) == len(audio.packet_times(mkv)) == 75
    assert decoded == [path]
    monkeypatch.setattr(audio, "frame_times", lambda p: (_ for _ in ()).throw(audio.VideoReadError("no")))
    np.testing.assert_allclose(presentation_times(reader(40, path.with_name("gone.mp4"), 20.0)), np.arange(40) / 20)
    np.testing.assert_allclose(presentation_times(SimpleNamespace(info=SimpleNamespace(fps=25.0, frame_count=0)), 2.0),
                               np.arange(50) / 25)


def test_frame_plan_samples_the_frames_a_variable_rate_mkv_holds(timed_videos):
    """An MKV declares no frame count and OpenCV's estimate overshoots at a variable rate
    (4200 for 75 here): the frame models' anchors come from the packets' count, so all 32
    fall on frames that exist; an MP4's declared count is taken as it is."""
    from inference.predictor import FaceExtractor, frame_count
    from preprocessing.video import FrameReader

    mkv = FrameReader(timed_videos["vfr_mkv"])
    assert mkv.info.frame_count > 75 and frame_count(mkv) == 75
    anchors, _, _ = FaceExtractor(num_frames=32).plan(mkv)
    assert len(set(anchors)) == 32 and max(anchors) == 74 and min(anchors) == 0
    assert len(dict(iter(FrameReader(timed_videos["vfr_mkv"]).select(set(anchors))))) == 32
    mp4 = FrameReader(timed_videos["vfr_mp4"])
    assert frame_count(mp4) == mp4.info.frame_count == 75


def test_frames_at_picks_the_nearest_frame_to_each_time_at_any_frame_rate():
    from preprocessing.audio import segments
    from training.av_data import frames_at

    t25 = np.arange(50) / 25.0
    assert frames_at(t25, 0.0, 5) == (0, 5, 10, 15, 20)
    assert frames_at(t25, 0.3, 5) == (7, 12, 17, 22, 27)  # 0.3 s = frame 7.5: the earlier on a tie
    vfr = np.cumsum(np.r_[0.0, np.random.default_rng(0).uniform(0.02, 0.06, 60)])  # variable frame rate
    for start in (0.0, 0.37, 1.0):
        picked = frames_at(vfr, start, 8)
        targets = start + np.arange(8) / 8
        np.testing.assert_allclose(np.abs(vfr[list(picked)] - targets), np.abs(vfr[:, None] - targets).min(0))
    # inside a segment (away from its edges) it agrees with the segments' own choice
    seg = segments(vfr, duration=2.0, frames_per_segment=8)[1]
    assert frames_at(vfr, seg.start, 8)[1:] == tuple(seg.frames)[1:]


def test_contrastive_loss_against_hand_values():
    d = torch.tensor([0.2, 0.5, 1.5])
    fake = torch.tensor([0.0, 1.0, 1.0])
    # real: d^2 = 0.04; fake at 0.5: (0.99 - 0.5)^2 = 0.2401; fake beyond the margin: 0
    assert float(contrastive_loss(d, fake)) == pytest.approx((0.04 + 0.2401 + 0.0) / 3)
    assert float(contrastive_loss(d, fake, margin=2.0)) == pytest.approx((0.04 + 2.25 + 0.25) / 3)


def test_loss_sign_a_few_steps_pull_synced_pairs_together_and_push_wrong_ones_apart():
    """A synced pair's audio and video share a hidden signal z (|z| >= 0.5); a fake's audio
    carries -z: a real face and a real voice that do not belong together, so the streams'
    own labels are REAL (stream_fake 0), as for data.av_fake_prob's wrong-sound segments.
    After a few steps the synced pairs are closer than the mismatched ones. (Checked over
    seeds 0-2: AUC 0.95-1.0, gap 0.36-0.67; a z near 0 would make fakes indistinguishable
    and the check a coin toss across CPUs.)"""
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(0)
    net = tiny_net()
    g = torch.Generator().manual_seed(1)

    def batch(n=16):
        z = torch.sign(torch.randn(n, generator=g)) * (0.5 + torch.rand(n, generator=g))  # the segment's "speech"
        video = z.view(n, 1, 1, 1, 1) * torch.ones(n, 4, 3, 32, 32) + 0.3 * torch.randn(n, 4, 3, 32, 32, generator=g)
        audio = z.view(n, 1, 1, 1) * torch.ones(n, 1, 13, 100) + 0.3 * torch.randn(n, 1, 13, 100, generator=g)
        fake = torch.zeros(n)
        fake[n // 2:] = 1
        audio[n // 2:] = -audio[n // 2:]  # the wrong sound
        return video, audio, fake

    d, y = train_then_measure(net, batch, steps=25, n_eval=32)
    assert d[y == 0].mean() < d[y == 1].mean() - 0.2
    assert roc_auc_score(y.numpy(), d.numpy()) > 0.85


def test_stream_labels_default_to_the_pair_label_and_can_differ_from_it():
    from training.zoo.mds import MDSOutput

    out = MDSOutput(distance=torch.tensor([0.2, 1.4]), video_logit=torch.tensor([0.3, -0.7]),
                    audio_logit=torch.tensor([-1.0, 2.0]), video_embedding=torch.zeros(2, 4),
                    audio_embedding=torch.zeros(2, 4))
    y = torch.tensor([0.0, 1.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert float(mds_loss(out, y)) == pytest.approx(
        float(contrastive_loss(out.distance, y) + bce(out.video_logit, y) + bce(out.audio_logit, y)))
    zeros = torch.zeros(2)
    assert float(mds_loss(out, y, stream_fake=zeros)) == pytest.approx(
        float(contrastive_loss(out.distance, y) + bce(out.video_logit, zeros) + bce(out.audio_logit, zeros)))


def test_calibration_fit_is_monotone_and_maps_mds_to_probabilities():
    from training.av_data import fit_calibration, video_mds

    names, mds = video_mds(["a", "a", "b", "c"], [0.1, 0.3, 0.9, 1.1])
    assert names == ["a", "b", "c"] and mds.tolist() == pytest.approx([0.2, 0.9, 1.1])
    a, b = fit_calibration(np.array([0.1, 0.2, 0.3, 0.8, 0.9, 1.0]), np.array([0, 0, 0, 1, 1, 1]))
    assert a > 0 and 0.3 < b < 0.8
    net = tiny_net()
    net.calibration.copy_(torch.tensor([a, b]))
    p = net.probability(torch.tensor([0.1, 1.0]))
    assert float(p[0]) < 0.5 < float(p[1])
    a1, b1 = fit_calibration(np.array([0.4, 0.6]), np.array([0, 0]))  # one class: a fixed slope at the mean
    assert a1 == 10.0 and b1 == pytest.approx(0.5)


def test_config_ties_the_av_task_to_its_network_data_and_loss():
    cfg = mds_cfg()
    assert cfg["task"] == "av" and cfg["optimizer"]["type"] == "Adam"
    for over, msg in [({"network": "DeepFakeClassifier"}, "DissonanceNet"),
                      ({"data": {"dataset": "frames"}}, "av_segments"),
                      ({"losses": {"BinaryCrossentropy": 1}}, "not for task 'av'"),
                      ({"margin": None}, "needs 'margin'"),
                      ({"data": {"av_fake_prob": 2}}, "av_fake_prob"),
                      ({"data": {"av_augment": True, "frame_features": True}}, "set one of them"),
                      ({"data": {"av_augment": "false"}}, "true or false")]:
        with pytest.raises(ConfigError, match=msg):
            mds_cfg(**over)


def test_shipped_mds_configs_follow_the_paper():
    from conftest import REPO
    from training.config import load_config

    paper = load_config(REPO / "configs" / "mds.json")
    assert (paper["optimizer"]["type"], paper["optimizer"]["learning_rate"], paper["optimizer"]["weight_decay"],
            paper["optimizer"]["batch_size"], paper["optimizer"]["schedule"]["epochs"]) == ("Adam", 1e-3, 1e-5, 8, 50)
    assert paper["model"] == {"embedding": 1024, "hidden": 4096, "audio_channels": 64, "margin": 0.99}
    assert paper["data"]["seq_len"] == 30 and paper["size"] == 224
    assert not paper["fp16"] and paper["normalize"]["mean"] == [0.485, 0.456, 0.406]  # fp32; their Normalize()
    assert load_config(REPO / "configs" / "mds_cpu.json")["task"] == "av"


def test_fingerprint_covers_both_streams():
    from training import fingerprint

    cfg = mds_cfg()
    net = tiny_net().eval()
    record = fingerprint.make(net, cfg)
    assert len(record["logits"]) == 3  # distance, video logit, audio logit
    assert fingerprint.verify(net, cfg, record, "x") == 0.0
    with torch.no_grad():
        net.audio_head[2].bias.add_(1.0)
    with pytest.raises(fingerprint.FingerprintError):
        fingerprint.verify(net, cfg, record, "x")
    assert math.isfinite(record["logits"][0])


def test_av_augmentation_draws_once_for_all_frames_of_a_segment():
    """data.av_augment's pipeline: one draw for every frame of a segment (a frame repeated
    stays repeated: the augmentation adds no motion), the batch equal to each frame alone
    under the same seed, a deterministic function of the generator, and it does change
    the crops (a flip alone included) for some draws."""
    from training.transforms import create_av_train_transforms, reseed

    rng0 = np.random.default_rng(3)
    frames = rng0.integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    frames[3] = frames[1]
    aug = create_av_train_transforms()
    changed = 0
    for seed in range(24):
        reseed(aug, np.random.default_rng(seed))
        out = aug(images=frames)["images"]
        assert out.shape == frames.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[3], out[1])
        for t in (0, 4):
            reseed(aug, np.random.default_rng(seed))
            np.testing.assert_array_equal(aug(images=frames[t:t + 1])["images"][0], out[t])
        reseed(aug, np.random.default_rng(seed))
        np.testing.assert_array_equal(aug(images=frames)["images"], out)
        changed += not np.array_equal(out, frames)
    assert changed >= 12
    flipped = 0  # a flip alone: p 0.5 x (1 - 0.5)^2 x (1 - 0.3)^2, about 6% of draws
    for seed in range(200):
        reseed(aug, np.random.default_rng(seed))
        flipped += np.array_equal(aug(images=frames)["images"], frames[:, :, ::-1])
    assert 3 <= flipped <= 30


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def av_work(tmp_path_factory):
    """The sample with sound (mouths driven by it) and wrong-sound fakes, steps 0, 1 --av and 4."""
    from conftest import make_opts
    from preprocessing.av import extract_av
    from preprocessing.crops import extract_crops
    from preprocessing.faces import detect_faces
    from preprocessing.folds import generate_folds
    from preprocessing.sample_data import generate_sample_dataset

    data, work = tmp_path_factory.mktemp("av_data"), tmp_path_factory.mktemp("av_work")
    generate_sample_dataset(data, folders=2, reals=2, fakes=1, seconds=2.2, size=(192, 144), seed=4, audio=True,
                            av_fakes=1)
    opts = make_opts(data, work)
    detect_faces(opts)
    extract_crops(opts)
    av = extract_av(opts, size=48)
    generate_folds(opts, folds=2, group_by="original")
    return data, work, av


@pytest.mark.slow
def test_av_step_writes_sound_and_face_tracks(av_work):
    from preprocessing.audio import read_wav
    from preprocessing.av import load_track, read_track_info

    data, work, av = av_work
    assert av.failed == 0 and av.done == 10 and av.noted == 0
    wav = sorted((work / "audio").rglob("*.wav"))
    tracks = sorted((work / "tracks").rglob("*.json"))
    assert len(wav) == len(tracks) == 10
    signal, rate = read_wav(wav[0])
    assert rate == 16000 and abs(len(signal) / rate - 2.2) < 0.1
    frames, times = load_track(tracks[0])
    assert frames.shape[1:] == (48, 48, 3) and len(frames) == len(times) == 33
    assert read_track_info(tracks[0])["margin"] == pytest.approx(0.15)
    np.testing.assert_allclose(np.diff(times), 1 / 15, atol=2e-3)


@pytest.mark.slow
def test_jitter_moves_training_segments_and_frame_features_match_the_frozen_encoder(av_work):
    """data.av_jitter: a training segment starts anywhere within J s of its place, inside the
    video, its frames and its sound moved together. data.frame_features: items carry the
    frozen encoder's features of exactly the crops they would have carried."""
    from training.av_data import AVSegmentDataset, frames_at
    from training.datasets import load_folds
    from training.engine import build_model

    _, work, _ = av_work
    over = dict(encoder="tf_efficientnet_lite0", pretrained="lite0", size=48,
                model={"region": "mouth", "time_steps": 4, "temporal_embedding": True, "frame_size": 32})
    plain = AVSegmentDataset(work, load_folds(work), fold=-1, train=True, cfg=mds_cfg(**over))
    jit = AVSegmentDataset(work, load_folds(work), fold=-1, train=True,
                           cfg=mds_cfg(**over, data={"av_jitter": 0.4, "frame_features": True}))
    k, start, frames = jit.items[0]
    v = jit.videos[k]
    starts = []
    for i in range(8):
        item = jit.get_item(0, np.random.default_rng(i))
        t = item["segment"]
        starts.append(t)
        assert 0 <= t <= v["last_start"] + 1e-9 and abs(t - start) <= 0.4 + 1e-9
        own = frames_at(v["times"], t, 4)
        np.testing.assert_allclose(item["image"].numpy(), jit.features[k][list(own)].astype(np.float32))
    assert len(set(starts)) > 4
    # the default path (no generator given, as in training): a new draw every call, within bounds
    drawn = [jit.get_item(0)["segment"] for _ in range(8)]
    assert len(set(drawn)) == 8 and all(max(0.0, start - 0.4) <= t <= start + 0.4 for t in drawn)
    # the features are the model's own frozen encoder's, on the same crops
    model = build_model(jit.cfg).eval()
    with torch.no_grad():
        direct = model.video.frame_features(plain.faces(k, frames))
    cached = torch.from_numpy(jit.features[k][list(frames)].astype(np.float32))
    torch.testing.assert_close(cached, direct, atol=2e-2, rtol=1e-2)  # stored as float16
    assert cached.shape == (4, model.video.channels)
    with pytest.raises(ValueError, match="frozen encoder's weights"):
        AVSegmentDataset(work, load_folds(work), fold=-1, train=True,
                         cfg=mds_cfg(**{**over, "pretrained": False}, data={"frame_features": True}))
    with pytest.raises(ValueError, match="r3d_18"):
        AVSegmentDataset(work, load_folds(work), fold=-1, train=True, cfg=mds_cfg(data={"frame_features": True}))


@pytest.mark.slow
def test_swap_prob_chooses_between_another_voice_and_the_same_voice_shifted(av_work):
    """data.av_swap_prob: 0 gives only the same video's sound shifted by >= av_min_shift
    (timing is the only cue), 1 only another REAL video's; the default mixes both."""
    from training.av_data import AVSegmentDataset
    from training.datasets import load_folds

    _, work, _ = av_work
    kinds = {}
    for prob in (0.0, 0.5, 1.0):
        ds = AVSegmentDataset(work, load_folds(work), fold=-1, train=True, cfg=mds_cfg(data={"av_swap_prob": prob}))
        rng = np.random.default_rng(0)
        k, start, _ = ds.items[int(np.flatnonzero(ds.labels == 0)[0])]
        drawn = [ds.wrong_audio(k, start, rng) for _ in range(40)]
        kinds[prob] = {kind for _, _, kind in drawn}
        for wav, t, kind in drawn:
            assert (wav == ds.videos[k]["wav"]) == (kind == "shift")
            if kind == "shift":
                assert abs(t - start) >= ds.min_shift - 1e-9
    assert kinds == {0.0: {"shift"}, 0.5: {"shift", "swap"}, 1.0: {"swap"}}


@pytest.mark.slow
def test_longer_segments_carry_their_length_of_frames_and_sound(av_work):
    """data.av_segment_s 2: a 2.2-s video gives one 2-s segment (two of 1 s by default),
    its MFCCs 200 steps long, its frames spread over the two seconds, and a jittered start
    that leaves the whole segment inside."""
    from training.av_data import AVSegmentDataset, frames_at
    from training.datasets import load_folds

    _, work, _ = av_work
    one = AVSegmentDataset(work, load_folds(work), fold=-1, train=True, cfg=mds_cfg())
    two = AVSegmentDataset(work, load_folds(work), fold=-1, train=True,
                           cfg=mds_cfg(data={"seq_len": 8, "av_segment_s": 2.0, "av_jitter": 0.5}))
    assert len(one.items) == 2 * len(two.items) and {s for _, s, _ in two.items} == {0.0}
    k, start, frames = two.items[0]
    v = two.videos[k]
    assert v["last_start"] == pytest.approx(min(v["duration"], v["times"][-1] + 1 / 15) - 2.0, abs=1e-3)
    assert frames == frames_at(v["times"], 0.0, 8, 2.0) and frames[-1] >= 15 * 1.5
    for i in range(6):
        item = two.get_item(0, np.random.default_rng(i))
        assert item["audio"].shape == (1, 13, 200) and item["image"].shape == (8, 3, 32, 32)
        assert 0 <= item["segment"] <= v["last_start"] + 1e-9


@pytest.mark.slow
def test_av_augment_changes_training_crops_only_and_alike_for_a_segments_frames(av_work):
    """data.av_augment: a training item (its own sound or a wrong one, with jitter) is the
    plain item with its crops put through one draw of the pipeline for all its frames,
    drawn after the item's other draws; sound, label and segment are the plain item's. The
    training path (the process's stream, a pickled copy as a worker gets) augments too,
    and the validation set (same config) is not augmented."""
    import pickle

    from training.av_data import AVSegmentDataset
    from training.datasets import load_folds
    from training.transforms import create_av_train_transforms, reseed

    _, work, _ = av_work
    data = {"av_jitter": 0.3}
    plain = AVSegmentDataset(work, load_folds(work), fold=-1, train=True, cfg=mds_cfg(data=data))
    aug = AVSegmentDataset(work, load_folds(work), fold=-1, train=True,
                           cfg=mds_cfg(data={**data, "av_augment": True}))
    real = int(np.flatnonzero(plain.labels == 0)[0])
    changed = 0
    for index in (real, real + len(plain.items)):  # its own sound; a wrong sound (FORCE_AV_FAKE)
        for seed in range(6):
            a = aug.get_item(index, np.random.default_rng(seed))
            rng = np.random.default_rng(seed)
            b = plain.get_item(index, rng)  # leaves rng where the augmentation draws from
            torch.testing.assert_close(a["audio"], b["audio"])
            for key in ("label", "segment", "file", "audio_start", "audio_kind", "audio_wav"):
                assert a[key] == b[key] if not torch.is_tensor(a[key]) else torch.equal(a[key], b[key])
            pipe = create_av_train_transforms()
            reseed(pipe, rng)
            u8 = np.rint((b["image"].permute(0, 2, 3, 1).numpy() * plain.std + plain.mean) * 255).astype(np.uint8)
            want = (pipe(images=u8)["images"].astype(np.float32) / 255 - plain.mean) / plain.std
            np.testing.assert_allclose(a["image"].permute(0, 2, 3, 1).numpy(), want, atol=1e-5)
            changed += not torch.allclose(a["image"], b["image"])
    assert changed >= 8
    first = aug[real]  # as training draws it, here and in a pickled copy of the dataset (a worker's)
    again = pickle.loads(pickle.dumps(aug))[real]
    assert first["image"].shape == again["image"].shape == (4, 3, 32, 32)
    assert not torch.equal(first["image"], again["image"])
    val = AVSegmentDataset(work, load_folds(work), fold=0, train=False, cfg=mds_cfg(data={"av_augment": True}))
    val_plain = AVSegmentDataset(work, load_folds(work), fold=0, train=False, cfg=mds_cfg())
    assert val.augment is None and len(val) == len(val_plain)
    for i in (0, len(val) - 1):
        torch.testing.assert_close(val[i]["image"], val_plain[i]["image"])


@pytest.mark.slow
def test_mds_trains_and_joins_a_detection_ensemble_abstaining_without_sound(av_work, sample_work, sample_dir,
                                                                              tmp_path):
    import json as jsonlib
    import shutil
    import subprocess
    import sys

    from conftest import REPO
    from inference.predictor import predict_videos
    from test_train import tiny
    from training.datasets import load_folds
    from training.engine import model_from_checkpoint, train
    from training.av_data import AVSegmentDataset

    data, work, _ = av_work
    cfg = mds_cfg(batches_per_epoch=2, optimizer={"batch_size": 4})
    ds = AVSegmentDataset(work, load_folds(work), fold=-1, train=True, cfg=cfg)
    assert len(ds) >= 10 and not ds.skipped
    item = ds.get_item(0)
    assert item["image"].shape == (4, 3, 32, 32) and item["audio"].shape == (1, 13, 100)
    real = int(np.flatnonzero(ds.labels == 0)[0])
    forced = ds.get_item(real + len(ds), np.random.default_rng(0))  # a REAL segment with the wrong sound
    assert float(forced["label"]) == 1 and forced["audio_kind"] in ("shift", "swap")
    assert not torch.equal(forced["audio"], ds.get_item(real)["audio"])
    assert float(forced["stream_label"]) == 0 and float(ds.get_item(real)["stream_label"]) == 0  # real streams
    # validation scores every REAL segment once more with a wrong sound, as a FAKE video of its own, seeded
    vals = [AVSegmentDataset(work, load_folds(work), fold=f, train=False, cfg=cfg) for f in (0, 1)]
    val = max(vals, key=lambda v: len(v._real_videos))
    assert len(val._real_videos) > 1
    n = len(val.items)
    assert len(val) == n + int((val.labels == 0).sum())
    clones = [val[i] for i in range(n, len(val))]
    assert all(c["video"].endswith("+wrong_audio") and float(c["label"]) == 1 and float(c["stream_label"]) == 0
               for c in clones)
    assert torch.equal(val[n]["audio"], clones[0]["audio"])  # the same wrong sound every epoch

    result = train(cfg, work, fold=0, weights_dir=tmp_path / "w", progress=False)
    h = result.history[0]
    assert h["segments"] > 0 and {"mds_real", "calibration", "auc"} <= set(h)
    model, _ = model_from_checkpoint(result.best)
    assert model.calibration.tolist() == pytest.approx(h["calibration"], rel=1e-5)

    frame = train(tiny(), sample_work[0], fold=0, weights_dir=tmp_path / "f", progress=False).best
    test = tmp_path / "test"
    test.mkdir()
    shutil.copy(sorted(data.rglob("*.mp4"))[0], test / "sound.mp4")
    shutil.copy(sorted(sample_dir.rglob("*.mp4"))[0], test / "silent.mp4")  # the plain sample has no sound
    pred = predict_videos([(p.name, p) for p in sorted(test.iterdir())], [frame, result.best], progress=False,
                          details=True, num_frames=4)
    assert not pred.errors and len(pred.rows) == 2
    assert pred.timings["frames_detected"] == 2 * 4  # a dissonance model in the ensemble: every anchor detected
    details = pred.details["silent.mp4"]["models"]
    av_name = Path(result.best).stem
    assert details[av_name]["video_score"] is None and details[av_name]["abstained"] == "no sound"
    sound = pred.details["sound.mp4"]["models"][av_name]
    assert sound["mds"] is not None and len(sound["segments"]) == 2
    assert [s["start"] for s in sound["segments"]] == [0.0, 1.0]
    # the ensemble's score of a silent video is the frame model's alone (on the same boxes: with
    # the dissonance model there every anchor was detected)
    alone = predict_videos([("silent.mp4", test / "silent.mp4")], [frame], progress=False, num_frames=4,
                           detect_every=1)
    assert dict(pred.rows)["silent.mp4"] == pytest.approx(alone.rows[0][1])

    proc = subprocess.run([sys.executable, "6_predict.py", str(test / "sound.mp4"), "--models", str(frame),
                           str(result.best), "--json", "--frames", "4"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = jsonlib.loads(proc.stdout.splitlines()[0])
    assert len(line["models"][av_name]["segments"]) == 2  # the per-second dissonance (localisation)


@pytest.mark.slow
def test_video_level_mds_trains_validates_and_predicts_over_the_joined_segments(av_work, tmp_path):
    """mds_motion_cpu's options end to end: the mouth-motion stream, only shifted wrong
    sounds, model.mds "video". Validation fits the calibration on the joined-segment
    distance; prediction reports that distance as the MDS, the same as the model's own
    video_distance over the video's segments, and still lists every second's distance."""
    from inference.predictor import FaceExtractor, load_models, predict_videos
    from training.av_data import mfcc_window
    from training.engine import train

    data, work, _ = av_work
    cfg = mds_cfg(encoder="mouth_motion", size=48, batches_per_epoch=2, optimizer={"batch_size": 4},
                  model={"region": "mouth", "time_steps": 4, "temporal_embedding": True, "frame_size": 16,
                         "mds": "video"},
                  data={"av_swap_prob": 0.0, "av_fake_prob": 1.0})
    # validation's wrong sound is one shift of the video's own sound for all its segments
    # that the advanced sound still covers, as a fake with shifted sound would have
    from training.av_data import AVSegmentDataset
    from training.datasets import load_folds

    val = max((AVSegmentDataset(work, load_folds(work), fold=f, train=False, cfg=cfg) for f in (0, 1)),
              key=lambda v: len(v._real_videos))
    clones = [val[i] for i in range(len(val.items), len(val))]
    delays = {}
    for c in clones:
        duration = next(v["duration"] for v in val.videos if c["video"] == v["video"] + "+wrong_audio")
        assert c["audio_kind"] == "shift" and c["audio_start"] + 1.0 <= duration + 1e-6
        delays.setdefault(c["video"], set()).add(round(c["audio_start"] - c["segment"], 6))
    assert len(delays) == len(val._real_videos)  # every REAL video has its shifted clone
    assert all(len(d) == 1 and 0.5 <= next(iter(d)) < 1.0 for d in delays.values())
    assert len({next(iter(d)) for d in delays.values()}) == len(delays)  # drawn per video
    assert len(clones) < int((val.labels == 0).sum())  # the advanced sound ends early: fewer segments

    result = train(cfg, work, fold=0, weights_dir=tmp_path / "w", progress=False)
    h = result.history[0]
    assert np.isfinite([h["mds_real"], h["mds_fake"], *h["calibration"]]).all()
    clip = sorted(data.rglob("*.mp4"))[0]
    # amp "on": the dissonance model must stay in float32 even where the face models run in bf16
    pred = predict_videos([("v.mp4", clip)], [result.best], progress=False, details=True, num_frames=4, amp="on")
    assert not pred.errors
    m = load_models([result.best], torch.device("cpu"))[0]
    got = pred.details["v.mp4"]["models"][m.name]
    assert got["mds_over"] == "video" and [s["start"] for s in got["segments"]] == [0.0, 1.0]
    faces = FaceExtractor(num_frames=4, margins=(m.margin,), av_segments=[(4, m.av_size, m.margin, 1.0)],
                          detect_every=1)(clip)  # as 6_predict detects for a dissonance model
    segs = faces.segments[(m.av_size, m.margin, 1.0, 4)]
    with torch.no_grad():
        out = m.model(torch.stack([m.augment(c) for _, c in segs]),
                      torch.stack([torch.from_numpy(mfcc_window(faces.mfcc, s)).unsqueeze(0) for s, _ in segs]))
        want = float(m.model.video_distance(out.video_features, out.audio_features))
    assert got["mds"] == pytest.approx(want, abs=1e-4)
    assert [s["distance"] for s in got["segments"]] == pytest.approx(out.distance.tolist(), abs=1e-4)
    assert pred.rows[0][1] == pytest.approx(float(m.model.probability(torch.tensor(want))), abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("segment_s", [1.0, 2.0])
def test_offset_search_validates_and_predicts_against_the_best_alignment(av_work, tmp_path, segment_s):
    """model.offset_search end to end: validation fits the calibration on the offset score;
    6_predict reports it as the MDS, with the distance at offset 0 (the plain video-level
    distance) and the estimated offset, and its P(FAKE) is the calibrated score."""
    from inference.predictor import FaceExtractor, load_models, predict_videos
    from training.av_data import mfcc_window, offset_windows
    from training.engine import train

    from training.av_data import AVSegmentDataset, _video_mfcc
    from training.datasets import load_folds

    data, work, _ = av_work
    cfg = mds_cfg(encoder="mouth_motion", size=48, batches_per_epoch=2, optimizer={"batch_size": 4},
                  model={"region": "mouth", "time_steps": 4, "temporal_embedding": True, "frame_size": 16,
                         "mds": "video", "offset_search": {"max_s": 0.6, "step_s": 0.2}},
                  data={"av_swap_prob": 0.0, "av_fake_prob": 1.0, "av_segment_s": segment_s})
    result = train(cfg, work, fold=0, weights_dir=tmp_path / "w", progress=False)
    h = result.history[0]
    assert np.isfinite([h["mds_real"], h["mds_fake"], *h["calibration"]]).all()
    m = load_models([result.best], torch.device("cpu"))[0]
    assert m.model.calibration.tolist() == pytest.approx(h["calibration"])
    # validation's scores, recomputed: each video's (and its shifted clone's) segments in time
    # order, every segment's own sound moved by every offset
    val = AVSegmentDataset(work, load_folds(work), fold=0, train=False, cfg=cfg)
    per = {}
    for i in range(len(val)):
        item = val[i]
        per.setdefault(item["video"], []).append(item)
    scores = {0: [], 1: []}
    with torch.no_grad():
        for items in per.values():
            items.sort(key=lambda t: t["segment"])
            assert all(t["image"].shape[0] == 4 and t["audio"].shape[-1] == int(100 * segment_s) for t in items)
            out = m.model(torch.stack([t["image"] for t in items]), torch.stack([t["audio"] for t in items]))
            wins = np.concatenate([offset_windows(_video_mfcc(t["audio_wav"])[0], [t["audio_start"]],
                                                  m.model.offsets, segment_s) for t in items], axis=1)
            score = m.model.offset_score(m.model.offset_curve(out.video_features, torch.from_numpy(wins)))[0]
            scores[int(items[0]["label"])].append(score)
    assert scores[0] and scores[1]
    assert [h["mds_real"], h["mds_fake"]] == pytest.approx([np.mean(scores[0]), np.mean(scores[1])], abs=1e-5)
    # the search looks for one offset of the whole video: with the paper's mean segment
    # distance too, validation's wrong sound is one shift per video (1-s segments: the
    # sample's 3-s clips leave no 2-s segment that an advanced sound still covers)
    segments_cfg = mds_cfg(model={"offset_search": {"max_s": 0.6, "step_s": 0.2}},
                           data={"av_swap_prob": 0.5, "av_fake_prob": 1.0})
    seg_val = AVSegmentDataset(work, load_folds(work), fold=0, train=False, cfg=segments_cfg)
    assert seg_val.video_level
    delays = {}
    for i in range(len(seg_val.items), len(seg_val)):
        c = seg_val[i]
        assert c["audio_kind"] == "shift"
        delays.setdefault(c["video"], set()).add(round(c["audio_start"] - c["segment"], 6))
    assert delays and all(len(d) == 1 for d in delays.values())
    clip = sorted(data.rglob("*.mp4"))[0]
    pred = predict_videos([("v.mp4", clip)], [result.best], progress=False, details=True, num_frames=4)
    assert not pred.errors
    assert m.model.offsets == (-0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6)
    got = pred.details["v.mp4"]["models"][m.name]
    assert got["mds_over"] == "video offsets"
    faces = FaceExtractor(num_frames=4, margins=(m.margin,), av_segments=[(4, m.av_size, m.margin, segment_s)],
                          detect_every=1)(clip)
    segs = faces.segments[(m.av_size, m.margin, segment_s, 4)]
    assert segs and [s["start"] for s in got["segments"]] == [s for s, _ in segs]
    with torch.no_grad():
        out = m.model(torch.stack([m.augment(c) for _, c in segs]),
                      torch.stack([torch.from_numpy(mfcc_window(faces.mfcc, s, segment_s)).unsqueeze(0)
                                   for s, _ in segs]))
        curve = m.model.offset_curve(out.video_features, torch.from_numpy(
            offset_windows(faces.mfcc, [s for s, _ in segs], m.model.offsets, segment_s)))
        d0 = float(m.model.video_distance(out.video_features, out.audio_features))
    assert got["distance_at_0"] == pytest.approx(d0, abs=1e-4)
    assert got["mds"] == pytest.approx(d0 - float(curve.min()), abs=1e-4)
    assert got["offset_s"] == m.model.offset_score(curve)[2]
    assert pred.rows[0][1] == pytest.approx(float(m.model.probability(torch.tensor(got["mds"]))), abs=1e-4)


@pytest.mark.slow
def test_lip_landmark_stream_trains_on_the_tracks_landmarks_and_predicts_from_its_crops(av_work, tmp_path):
    """encoder "lip_landmarks" (mds_lips_cpu's stream) end to end: the dataset fits dlib on
    every track frame once and an item, jittered or not, carries its frames' lip features
    (T, NUM_LIP_FEATURES); training runs; 6_predict computes the same numbers from its own
    crops and reports the model's joined-segment distance on them."""
    from inference.predictor import FaceExtractor, load_models, predict_videos, visual_input
    from preprocessing.av import load_track
    from training.av_data import AVSegmentDataset, frames_at, mfcc_window
    from training.datasets import load_folds
    from training.engine import train
    from training.lips import NUM_LIP_FEATURES, crops_lip_features

    data, work, _ = av_work
    cfg = mds_cfg(encoder="lip_landmarks", size=48, batches_per_epoch=2, optimizer={"batch_size": 4},
                  model={"time_steps": 4, "temporal_embedding": True, "mds": "video"},
                  data={"av_swap_prob": 0.0, "av_fake_prob": 1.0, "av_jitter": 0.3})
    ds = AVSegmentDataset(work, load_folds(work), fold=-1, train=True, cfg=cfg)
    for k, v in enumerate(ds.videos):
        frames, _ = load_track(v["track"])
        assert ds.features[k].shape == (len(frames), NUM_LIP_FEATURES)
    frames, _ = load_track(ds.videos[0]["track"])
    np.testing.assert_array_equal(ds.features[0], crops_lip_features(frames, 0.15)[0])
    assert np.abs(ds.features[0]).sum() > 0  # dlib fits the sample's drawn faces
    for i in range(4):
        item = ds.get_item(0, np.random.default_rng(i))
        k = ds.items[0][0]
        own = frames_at(ds.videos[k]["times"], item["segment"], 4)
        assert item["image"].shape == (4, NUM_LIP_FEATURES)
        np.testing.assert_array_equal(item["image"].numpy(), ds.features[k][list(own)])

    result = train(cfg, work, fold=0, weights_dir=tmp_path / "w", progress=False)
    assert np.isfinite(result.history[0]["mds_real"])
    clip = sorted(data.rglob("*.mp4"))[0]
    pred = predict_videos([("v.mp4", clip)], [result.best], progress=False, details=True, num_frames=4)
    assert not pred.errors
    m = load_models([result.best], torch.device("cpu"))[0]
    got = pred.details["v.mp4"]["models"][m.name]
    faces = FaceExtractor(num_frames=4, margins=(m.margin,), av_segments=[(4, m.av_size, m.margin, 1.0)],
                          detect_every=1)(clip)
    segs = faces.segments[(m.av_size, m.margin, 1.0, 4)]
    x = torch.stack([visual_input(m, c) for _, c in segs])
    assert x.shape == (len(segs), 4, NUM_LIP_FEATURES)
    with torch.no_grad():
        out = m.model(x, torch.stack([torch.from_numpy(mfcc_window(faces.mfcc, s)).unsqueeze(0) for s, _ in segs]))
        want = float(m.model.video_distance(out.video_features, out.audio_features))
    assert got["mds"] == pytest.approx(want, abs=1e-4)
