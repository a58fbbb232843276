"""Training data: transforms, SBI, re-encoding, datasets, samplers.

Fast tests use small synthetic work dirs; the `slow` ones run on the generated sample
(steps 0-4 on real H.264 clips, the session fixture `sample_work`).
"""
import os
import tempfile
import warnings

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from preprocessing.artifacts import FOLDS_COLUMNS, WorkDir, atomic_write_bytes, encode_png, read_png
from training.datasets import (SBI_FORCE, SBI_NEVER, SBI_PAIR_FAKE, SBI_PAIR_REAL, BalancedSampler, FrameDataset, PairDataset,
                               SequenceDataset, SequencePairDataset, dataset_config, load_folds)
from training.reencode import NTECH_TUNES, ReencodeParams, output_index, reencode_clip
from training.sbi import _region_mask, self_blend, self_blend_pair
from training.config import ConfigError, validate
from training.transforms import (IMAGENET_MEAN, IMAGENET_STD, Augmenter, IsotropicResize, create_train_transforms,
                                 create_val_transforms, isotropic_resize, normalize_to_tensor, reseed)

C = dataset_config  # a config holding what a dataset reads

LANDMARKS5 = np.array([[36, 52], [68, 50], [53, 69], [42, 84], [68, 82]], np.float32)  # in a 107x131 crop


def smooth_image(h=131, w=107, seed=0):
    """A face-sized test image with smooth structure (codecs and blurs behave as on photos)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    cv2.ellipse(img, (w // 2, h // 2), (w // 4, h // 3), 0, 0, 360, (200, 160, 140), -1)
    return img


def make_work(tmp_path, reals=4, fakes_per_real=1, folds=2, frames=(0, 10, 20), size=(40, 32)):
    """A synthetic WORK_DIR: crops, landmarks, diffs and folds.csv, in step 0-4 formats."""
    work = WorkDir(tmp_path)
    rows = []
    for r in range(reals):
        real_id = f"part/real{r}"
        videos = [(real_id, 0, real_id)] + [(f"part/fake{r}_{k}", 1, real_id) for k in range(fakes_per_real)]
        for video, label, original in videos:
            for frame in frames:
                img = smooth_image(*size, seed=len(rows))
                atomic_write_bytes(work.crop(video, frame, 0), encode_png(img))
                if label == 0:
                    work.landmarks_dir(video).mkdir(parents=True, exist_ok=True)
                    np.save(work.landmarks(video, frame, 0), LANDMARKS5 * size[1] / 107)
                else:
                    diff = np.zeros(size, np.uint8)
                    diff[size[0] // 4:-size[0] // 4, size[1] // 4:-size[1] // 4] = 200
                    atomic_write_bytes(work.diff(video, frame, 0), encode_png(diff, rgb=False))
                rows.append({"video": video, "file": f"crops/{video}/{frame}_0.png", "label": label,
                             "original": original, "frame": frame, "face": 0, "fold": r % folds})
    pd.DataFrame(rows, columns=FOLDS_COLUMNS).to_csv(work.folds, index=False)
    return tmp_path


def labels_df(n_real, n_fake):
    rows = [{"video": f"v{i}", "file": f"crops/v{i}/0_0.png", "label": int(i >= n_real),
             "original": f"v{i}" if i < n_real else "", "frame": 0, "face": 0, "fold": 1}
            for i in range(n_real + n_fake)]
    return pd.DataFrame(rows, columns=FOLDS_COLUMNS)


# --------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("shape,size,expected", [((131, 107, 3), 64, (64, 52, 3)), ((50, 100, 3), 200, (100, 200, 3)),
                                                  ((64, 64, 3), 64, (64, 64, 3)), ((30, 90), 45, (15, 45))])
def test_isotropic_resize_keeps_aspect(shape, size, expected):
    out = isotropic_resize(np.zeros(shape, np.uint8), size)
    assert out.shape == expected
    assert abs(out.shape[0] / out.shape[1] - shape[0] / shape[1]) < 0.02


def test_transforms_shapes_and_determinism():
    img = smooth_image()
    train = create_train_transforms(64)
    outs = []
    for _ in range(2):
        reseed(train, np.random.default_rng(3))
        outs.append(train(image=img)["image"])
    assert outs[0].shape == (64, 64, 3) and outs[0].dtype == np.uint8
    assert np.array_equal(outs[0], outs[1])
    val = create_val_transforms(64)(image=img)["image"]
    assert val.shape == (64, 64, 3)
    assert np.array_equal(val[:, :6], np.zeros_like(val[:, :6]))  # padded left and right, not stretched
    import albumentations as A
    assert A.Compose([IsotropicResize(32)])(image=img)["image"].shape == (32, 26, 3)


def test_low_res_augmentation_blurs_real_and_fake_alike_and_is_off_by_default():
    """data.low_res_prob (#8): the crop is first shrunk to a random long side in
    [low_res_min_side, size]; the output keeps the model's size but loses detail. Off, the
    pipeline is selim's, transform for transform."""
    import albumentations as A

    assert not any(isinstance(t, A.LongestMaxSize) for t in create_train_transforms(64).transforms)
    img = np.random.default_rng(0).integers(0, 255, (200, 160, 3), dtype=np.uint8)  # all detail
    always = create_train_transforms(64, low_res_prob=1.0, low_res_min_side=16)
    shrink = always.transforms[0]
    assert isinstance(shrink, A.LongestMaxSize) and min(shrink.max_size) == 16 and max(shrink.max_size) <= 64
    reseed(always, np.random.default_rng(1))
    sizes = {A.Compose([shrink])(image=img)["image"].shape[0] for _ in range(30)}
    assert len(sizes) > 3 and min(sizes) < 40  # random sizes, down to the minimum's range
    out = always(image=img)["image"]
    assert out.shape == (64, 64, 3)
    cfg = validate({"data": {"low_res_prob": 0.5}})
    assert cfg["data"]["low_res_min_side"] == 40
    with pytest.raises(ConfigError, match="low_res_prob"):
        validate({"data": {"low_res_prob": 2}})
    with pytest.raises(ConfigError, match="at most 'size'"):
        validate({"size": 64, "data": {"low_res_prob": 0.5, "low_res_min_side": 80}})


def test_reseed_decorrelates_transforms():
    """albumentations' own set_random_seed gives every transform one seed; ours does not."""
    import albumentations as A
    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    pipeline = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    kinds = set()
    for s in range(30):
        reseed(pipeline, np.random.default_rng(s))
        out = pipeline(image=img)["image"]
        kinds.add((not np.array_equal(out, img), np.array_equal(out, img[::-1]) or np.array_equal(out, img[::-1, ::-1])))
    assert len(kinds) >= 3


def test_ntech_resize_pads_with_mirrored_rows_in_training_and_prediction():
    """NTech's PadIfNeeded kept albumentations' default border, REFLECT_101: a face crop
    wider than the input's aspect is padded with its own rows mirrored, not black."""
    img = np.repeat(np.linspace(20, 250, 60).astype(np.uint8)[:, None], 120, 1)[..., None].repeat(3, -1)  # 60x120
    for train in (False, True):
        cfg = C([96, 80], mean=(0, 0, 0), std=(1, 1, 1), augment="ntech", resize="shortest", autoaugment="")
        aug = Augmenter(cfg, train=train)
        aug.reseed(np.random.default_rng(0))
        out = np.round(aug([img])[0].permute(1, 2, 0).numpy() * 255)  # short side 80: 80x160, padded to 96 rows
        assert out.shape == (96, 80, 3) and out.min() > 0
        assert np.allclose(out[:8], out[16:8:-1], atol=1)  # the 8 rows above the image mirror its rows 1-8


def test_selim_shift_scale_rotate_scales_both_axes_alike():
    """selim's ShiftScaleRotate drew one scale for both axes: a square stays a square."""
    import albumentations as A

    affine = next(t for t in create_train_transforms(96).transforms if isinstance(t, A.Affine))
    affine.p = 1.0
    img = np.zeros((96, 96, 3), np.uint8)
    img[28:68, 28:68] = 255
    pipeline = A.Compose([affine])
    for s in range(20):
        reseed(pipeline, np.random.default_rng(s))
        ys, xs = np.nonzero(pipeline(image=img)["image"][..., 0] > 127)
        h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
        assert abs(h - w) <= 2, (s, h, w)  # a rotated square's bounding box is still square


def test_normalize_to_tensor():
    img = np.full((4, 5, 3), 255, np.uint8)
    x = normalize_to_tensor(img)
    assert x.shape == (3, 4, 5) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0], (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))
    assert normalize_to_tensor(np.zeros((2, 4, 5, 3), np.uint8)).shape == (2, 3, 4, 5)


# --------------------------------------------------------------------------- SBI
@pytest.mark.parametrize("style", ["legacy", "official"])
def test_self_blend_mask_and_determinism(style):
    """Both generators (`official`: mapooon/SelfBlendedImages): a soft mask in [0, 1],
    nothing changed outside it, the same seed the same fake, whatever ran in between (the
    official style's shared albumentations pipelines are reseeded per call)."""
    img = smooth_image()
    fake, mask = self_blend(img, LANDMARKS5, np.random.default_rng(5), style=style)
    assert fake.shape == img.shape and fake.dtype == np.uint8
    assert mask.shape == img.shape[:2] and mask.dtype == np.float32
    assert mask.min() >= 0 and mask.max() <= 1 and mask.max() >= 0.25
    changed = (fake != img).any(-1)
    assert changed.any() and not (changed & (mask == 0)).any()
    self_blend(img, LANDMARKS5, np.random.default_rng(99), style=style)
    again, mask2 = self_blend(img, LANDMARKS5, np.random.default_rng(5), style=style)
    assert np.array_equal(fake, again) and np.array_equal(mask, mask2)
    other, _ = self_blend(img, LANDMARKS5, np.random.default_rng(6), style=style)
    assert not np.array_equal(fake, other)


def test_official_sbi_blend_ratios_and_styles():
    """The official style's blend ratios are the paper's; an unknown style is refused."""
    img = smooth_image()
    peaks = {round(float(self_blend(img, LANDMARKS5, np.random.default_rng(s), style="official")[1].max()), 3)
             for s in range(40)}
    assert peaks <= {0.25, 0.5, 0.75, 1.0} and len(peaks) >= 3  # BLEND_RATIOS
    with pytest.raises(ValueError, match="unknown SBI style"):
        self_blend(img, LANDMARKS5, np.random.default_rng(0), style="paper")


def test_official_sbi_seeds_each_transform_apart(monkeypatch):
    """Compose.set_random_seed gives every transform the same seed, so their first draws
    would be one number (RGBShift firing exactly when the contrast is low): each transform
    gets its own seed from the item's generator."""
    from training import sbi

    img = smooth_image()
    pipeline = sbi._seeded("colour", sbi._official_colour)
    for t in pipeline.transforms:
        t.set_random_seed(123)
    assert len({t.py_random.random() for t in pipeline.transforms}) == 1  # the trap
    last = {}
    for i, t in enumerate(pipeline.transforms):
        original = t.set_random_seed
        monkeypatch.setattr(t, "set_random_seed",
                            lambda seed, i=i, original=original: (last.__setitem__(i, seed), original(seed)))
    sbi._run("colour", sbi._official_colour, np.random.default_rng(1), image=img)
    assert len(last) == len(pipeline.transforms) and len(set(last.values())) == len(last)


def test_official_sbi_source_transform_and_blend_mask():
    """Their RandomDownScale (2x or 4x, nearest down) or Sharpen after the colour jitter;
    their get_blend_mask: a soft mask that peaks at 1 inside the hull and is 0 far outside."""
    from training.sbi import official_blend_mask, official_source_transform

    img = smooth_image()
    outs = [official_source_transform(img, np.random.default_rng(s)) for s in range(30)]
    assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outs)
    assert len({o.tobytes() for o in outs}) == 30 and all(not np.array_equal(o, img) for o in outs)
    hull = np.zeros((200, 160), np.uint8)
    hull[50:150, 40:120] = 1
    soft = official_blend_mask(hull, np.random.default_rng(0))
    assert soft.shape == hull.shape and soft.dtype == np.float32
    assert soft.max() == pytest.approx(1.0, abs=1e-6) and soft[100, 80] > 0.9
    assert soft[:10].max() < 0.05 and soft[:, :10].max() < 0.05  # far from the hull: nothing
    assert 0.05 < soft[50, 80] < 0.95  # a soft edge across the hull's border


@pytest.mark.parametrize("points", [LANDMARKS5, None])
def test_sbi_regions_nest_on_the_face(points, monkeypatch):
    """The lip-sync regions (beyond the paper): the mouth lies inside the lower face, which
    lies below the eyes; areas grow mouth < lower < face. The 5-point and the no-landmark
    geometries (dlib's 68 points are taken away)."""
    monkeypatch.setattr("training.sbi.face_landmarks68", lambda img, predictor=None: None)
    img = smooth_image()
    masks = {r: _region_mask(img.shape[:2], img, points, None, r) > 0 for r in ("face", "lower", "mouth")}
    area = {r: int(m.sum()) for r, m in masks.items()}
    assert 0 < area["mouth"] < area["lower"] < area["face"]
    assert (masks["mouth"] & masks["lower"]).sum() >= 0.9 * area["mouth"]
    eye_row = int(LANDMARKS5[:2, 1].max()) if points is not None else int(0.4 * img.shape[0])
    assert not masks["mouth"][:eye_row].any() and not masks["lower"][:eye_row].any()
    if points is not None:  # the mouth region is centred on the mouth corners' midpoint
        ys, xs = np.nonzero(masks["mouth"])
        assert np.allclose([xs.mean(), ys.mean()], LANDMARKS5[3:].mean(0), atol=2)


def test_self_blend_mouth_region_changes_only_the_mouth(monkeypatch):
    monkeypatch.setattr("training.sbi.face_landmarks68", lambda img, predictor=None: None)
    img = smooth_image()
    for seed in range(5):
        fake, mask = self_blend(img, LANDMARKS5, np.random.default_rng(seed), regions={"mouth": 1.0})
        changed = (fake != img).any(-1)
        assert changed.any() and not (changed & (mask == 0)).any()
        assert not mask[: int(LANDMARKS5[:2, 1].max())].any()  # nothing at or above the eyes
    # weights pick the region: face-only weights give the paper's whole-face draw
    same = self_blend(img, LANDMARKS5, np.random.default_rng(3), regions={"face": 1.0})[1]
    assert (same > 0).sum() > 2 * (mask > 0).sum()


# --------------------------------------------------------------------------- re-encoding
def test_reencode_clip_degrades_and_leaves_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tempfile.gettempdir()))
    clip = np.stack([smooth_image(seed=0), smooth_image(seed=0), smooth_image(seed=1)])
    params = ReencodeParams(fps=30, scale=0.6, crf=39, tune="film")
    out = reencode_clip(clip, params=params)
    assert out.shape == clip.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - clip).mean()
    assert 0 < err < 40
    again = reencode_clip(clip, np.random.default_rng(0))
    assert np.array_equal(again, reencode_clip(clip, np.random.default_rng(0)))  # same draw, same bytes
    assert reencode_clip(clip[:1], np.random.default_rng(1)).shape == clip[:1].shape
    assert reencode_clip(clip[:0], np.random.default_rng(1)).shape == clip[:0].shape
    assert reencode_clip(np.zeros((2, 9, 7, 3), np.uint8), np.random.default_rng(2)).shape[1:] == (9, 7, 3)
    assert set(os.listdir(tempfile.gettempdir())) == before and os.listdir(tmp_path) == []


def test_reencode_draws_ntechs_settings():
    draws = [ReencodeParams.draw(np.random.default_rng(s), 30.0) for s in range(400)]
    fps = np.array([d.fps for d in draws])
    assert 0.4 < (fps < 30).mean() < 0.6 and fps.min() >= 15 and set(fps) <= set(map(float, range(15, 31)))
    scales = np.array([d.scale for d in draws])
    assert 0.4 < (scales < 1).mean() < 0.6 and scales.min() >= 0.25
    assert {d.crf for d in draws} == set(range(17, 40))
    assert {d.tune for d in draws} == set(NTECH_TUNES)
    assert ReencodeParams.draw(np.random.default_rng(3), 30.0) == ReencodeParams.draw(np.random.default_rng(3), 30.0)


def test_reencode_whole_clip_drops_frames_and_predicts_across_them():
    """At 15 fps a 30-fps clip loses every other frame, and the frames between I-frames
    are P/B frames: a moving clip encodes unlike its frames one by one."""
    rng = np.random.default_rng(0)
    base = smooth_image(96, 96, seed=3)
    clip = np.stack([np.roll(base, 2 * k, axis=1) for k in range(12)])
    out = reencode_clip(clip, params=ReencodeParams(fps=15, scale=1.0, crf=30, tune=None), src_fps=30)
    assert len(out) == 6
    assert output_index(11, 12, 6) == 5 and output_index(0, 12, 6) == 0 and output_index(6, 12, 6) == 3
    # frame 4 of the output shows input frame 8
    assert np.abs(out[4].astype(int) - clip[8]).mean() < np.abs(out[4].astype(int) - clip[9]).mean()
    single = np.stack([reencode_clip(f[None], params=ReencodeParams(30, 1.0, 30, None))[0] for f in clip[::2]])
    assert not np.array_equal(single, out)  # intra-only encodes differ from the clip's P/B frames
    del rng


# --------------------------------------------------------------------------- epochs and samplers
def test_load_folds_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="run 4_generate_folds.py first"):
        load_folds(tmp_path)


def test_balanced_epoch_indices(tmp_path):
    ds = FrameDataset(tmp_path, labels_df(3, 11), fold=0, train=True, cfg=C(32))
    idx = ds.epoch_indices(0, 40)
    labels = ds.labels[idx]
    assert len(idx) == 40 and (labels == 0).sum() == (labels == 1).sum() == 20
    assert set(np.array(idx)[labels == 0]) == {0, 1, 2}  # the 3 reals oversampled evenly
    assert np.bincount(np.array(idx)[labels == 0]).max() - np.bincount(np.array(idx)[labels == 0]).min() <= 1
    assert idx == ds.epoch_indices(0, 40)
    assert idx != ds.epoch_indices(1, 40)
    assert idx != ds.epoch_indices(0, 40, seed=1)
    assert len(ds.epoch_indices(0)) == 22  # default: twice the larger class
    with pytest.raises(ValueError, match="no FAKE"):
        FrameDataset(tmp_path, labels_df(3, 0), 0, True, C(32)).epoch_indices(0, 10)


def test_balanced_sampler_shards():
    ds = FrameDataset("/nonexistent", labels_df(6, 6), fold=0, train=True, cfg=C(32))
    shards = []
    for rank in range(3):
        sampler = BalancedSampler(ds, 4, seed=7, rank=rank, world_size=3)
        sampler.set_epoch(2)
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1]) == 4
    full = ds.epoch_indices(2, 12, seed=7)
    assert [i for i in full] == [shards[k % 3][k // 3] for k in range(12)]
    assert set(shards[0]).isdisjoint(shards[1]) and set(shards[1]).isdisjoint(shards[2])
    assert sorted(sum(shards, [])) == list(range(12))  # each row exactly once: no overlap
    sampler = BalancedSampler(ds, 4, seed=7, rank=0, world_size=3)
    sampler.set_epoch(3)
    assert list(sampler) != shards[0]


def test_sbi_epochs_of_real_rows_only():
    ds = FrameDataset("/nonexistent", labels_df(5, 0), fold=0, train=True, cfg=C(32, sbi=True, sbi_prob=0.3))
    idx = ds.epoch_indices(0, 20)
    modes = [ds.decode_index(i)[1] for i in idx]
    assert modes.count(SBI_FORCE) == modes.count(SBI_NEVER) == 10
    assert [ds.effective_label(i) for i in idx].count(1) == 10
    # with real fakes present, SBI fakes take a share sbi_prob of the fake half
    mixed = FrameDataset("/nonexistent", labels_df(5, 5), fold=0, train=True, cfg=C(32, sbi=True, sbi_prob=0.5))
    labels = [mixed.effective_label(i) for i in mixed.epoch_indices(0, 400)]
    assert labels.count(1) == labels.count(0) == 200
    forced = sum(mixed.decode_index(i)[1] == SBI_FORCE for i in mixed.epoch_indices(0, 400))
    assert 60 < forced < 140


def test_sbi_pair_epochs_keep_each_fake_next_to_its_real():
    ds = FrameDataset("/nonexistent", labels_df(5, 5), fold=0, train=True,
                      cfg=C(32, sbi=True, sbi_prob=0.5, sbi_pairs=True))
    assert ds.epoch_unit == 2
    idx = ds.epoch_indices(0, 400)
    assert idx == ds.epoch_indices(0, 400) and idx != ds.epoch_indices(1, 400)
    labels = [ds.effective_label(i) for i in idx]
    assert labels.count(1) == labels.count(0) == 200
    modes = [ds.decode_index(i)[1] for i in idx]
    assert 60 < modes.count(SBI_PAIR_FAKE) < 140 and modes.count(SBI_PAIR_REAL) == modes.count(SBI_PAIR_FAKE)
    nonces = set()
    for k, (i, mode) in enumerate(zip(idx, modes)):
        if mode == SBI_PAIR_REAL:  # at an even place, its fake right after: same row, same nonce
            assert k % 2 == 0 and modes[k + 1] == SBI_PAIR_FAKE
            assert ds.decode_index(idx[k + 1])[0] == ds.decode_index(i)[0]
            assert ds.pair_nonce(idx[k + 1]) == ds.pair_nonce(i)
            nonces.add(ds.pair_nonce(i))
    assert len(nonces) == modes.count(SBI_PAIR_REAL)
    # DDP: ranks take whole pairs, equally many items, disjoint
    shards = []
    for rank in range(3):
        sampler = BalancedSampler(ds, 7, seed=0, rank=rank, world_size=3)  # rounded up to whole pairs
        shard = list(sampler)
        assert len(shard) == len(sampler) == 8
        m = [ds.decode_index(i)[1] for i in shard]
        assert all(m[k + 1] == SBI_PAIR_FAKE for k in range(0, 8, 2) if m[k] == SBI_PAIR_REAL)
        assert SBI_PAIR_FAKE not in m[0::2] and SBI_PAIR_REAL not in m[1::2]
        shards += shard
    assert sorted(shards) == sorted(ds.epoch_indices(0, 24, seed=0))  # the epoch, split without overlap
    # validation never makes SBI fakes: a pair index means nothing there
    val = FrameDataset("/nonexistent", labels_df(5, 5), fold=1, train=False, cfg=C(32, sbi=True, sbi_pairs=True))
    with pytest.raises(IndexError):
        val.decode_index(idx[modes.index(SBI_PAIR_FAKE)])


def test_self_blend_pair_alters_source_or_target():
    img = smooth_image()
    altered_target = 0
    for seed in range(12):
        real, fake, mask = self_blend_pair(img, LANDMARKS5, np.random.default_rng(seed))
        assert real.shape == fake.shape == img.shape and mask.shape == img.shape[:2]
        assert np.array_equal(real[mask == 0], fake[mask == 0])  # they differ only by the blend
        assert (real != fake).any(-1).sum() > 100
        altered_target += not np.array_equal(real, img)
        again = self_blend_pair(img, LANDMARKS5, np.random.default_rng(seed))
        assert all(np.array_equal(a, b) for a, b in zip((real, fake, mask), again))
    assert 2 <= altered_target <= 10  # their 50/50: sometimes the REAL is the altered target
    real, fake, mask = self_blend_pair(img, LANDMARKS5, np.random.default_rng(0), style="legacy")
    assert np.array_equal(real, img) and np.array_equal(real[mask == 0], fake[mask == 0])


@pytest.mark.parametrize("hardcore", [False, True])
def test_sbi_pair_items_share_their_augmentation(tmp_path, hardcore):
    work = make_work(tmp_path, reals=3, fakes_per_real=0, size=(131, 107))
    cfg = C(64, sbi=True, sbi_pairs=True, hardcore=hardcore)
    ds = FrameDataset(work, load_folds(work), fold=-1, train=True, cfg=cfg)
    idx = ds.epoch_indices(0, 8)
    assert [ds.effective_label(i) for i in idx] == [0, 1] * 4  # no FAKE rows: every fake is paired
    items = [ds[i] for i in idx]
    assert [float(it["label"]) for it in items] == [0.0, 1.0] * 4
    for real, fake in zip(items[0::2], items[1::2]):
        assert real["file"] == fake["file"] and real["image"].shape == fake["image"].shape == (3, 64, 64)
        same = (real["image"] == fake["image"]).all(0).float().mean()
        assert same > 0.2  # the same crop, blackout and augmentation: equal outside the blend
        assert not torch.equal(real["image"], fake["image"])
    # a fresh dataset (another worker) makes the same pair from the index alone
    again = FrameDataset(work, load_folds(work), fold=-1, train=True, cfg=cfg)
    assert torch.equal(again[idx[1]]["image"], items[1]["image"])
    # two different pairs are augmented apart
    assert (items[0]["image"] == items[2]["image"]).all(0).float().mean() < 0.2


def test_sbi_pair_items_are_the_pairs_real_and_fake(tmp_path):
    from training.datasets import PAIR_STREAM

    work = make_work(tmp_path, reals=2, fakes_per_real=1, size=(131, 107))
    ds = FrameDataset(work, load_folds(work), fold=-1, train=True,
                      cfg=C(64, sbi=True, sbi_pairs=True, hardcore=False, augment="none"))
    idx = ds.epoch_indices(0, 16)
    k = [ds.decode_index(i)[1] for i in idx].index(SBI_PAIR_REAL)
    row_index, _ = ds.decode_index(idx[k])
    row = ds.rows.iloc[row_index]
    rng_blend, _, rng_augment = np.random.default_rng([ds.seed, ds.pair_nonce(idx[k]), PAIR_STREAM]).spawn(3)
    real, fake, _ = self_blend_pair(read_png(work / row.file), ds._landmarks(row), rng_blend)
    for i, expected in ((idx[k + 1], fake), (idx[k], real)):  # the FAKE first: order does not matter
        ds.augment.reseed(np.random.default_rng([ds.seed, ds.pair_nonce(i), PAIR_STREAM]).spawn(3)[2])
        assert torch.equal(ds[i]["image"], ds.augment([expected])[0])
    with pytest.raises(IndexError):  # a pair index on a FAKE row means nothing
        fake_row = int(np.flatnonzero(ds.labels == 1)[0])
        ds.decode_index(idx[k] - row_index + fake_row)


def test_sbi_pair_shares_its_hardcore_blackout(tmp_path, monkeypatch):
    """The blackout is drawn once for the pair: a bit mask chosen to leave the FAKE's
    blend visible is the REAL's too, so the two differ only by the blend."""
    from training import augmentations

    monkeypatch.setattr(augmentations, "LANDMARK_PROB", 0.0)
    monkeypatch.setattr(augmentations, "HULL_PROB", 0.0)
    monkeypatch.setattr(augmentations, "BIT_MASK_PROB", 1.0)
    work = make_work(tmp_path, reals=1, fakes_per_real=0, size=(131, 107))
    monkeypatch.setattr("training.sbi.face_landmarks68", lambda img, predictor=None: None)
    regions = {"mouth": 1.0}  # a small blend: some halves hide all of it, and the FAKE's choice skips them
    ds = FrameDataset(work, load_folds(work), fold=-1, train=True,
                      cfg=C(64, sbi=True, sbi_pairs=True, sbi_regions=regions))
    row = ds.rows.iloc[0]
    for seed in range(40):
        _, real, fake = ds._make_pair(0, np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1]))
        _, _, mask = self_blend_pair(read_png(work / row.file), ds._landmarks(row), np.random.default_rng([seed, 0]),
                                     regions=regions)
        black = (real == 0).all(-1)
        assert black.any() and np.array_equal(black, (fake == 0).all(-1))
        assert np.array_equal(real[mask == 0], fake[mask == 0])


def test_sequence_sbi_epochs_and_clips(tmp_path):
    """SBI for the sequence model (#8): balanced epochs carry the SBI decision in the index
    as for frames, and a REAL clip turned fake has every frame blended with one draw."""
    work = make_work(tmp_path, reals=2, folds=2)
    df = load_folds(work)
    real = df[df.video == "part/real0"]
    still = read_png(work / real.file.iloc[0])
    for f in real.file:  # a still clip: the same crop at every frame
        atomic_write_bytes(work / f, encode_png(still))
    cfg = C(32, mean=(0, 0, 0), std=(1, 1, 1), dataset="sequences", seq_len=3, sbi=True, sbi_prob=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no clip crops: clips of detected frames
        ds = SequenceDataset(work, df, fold=-1, train=True, cfg=cfg)
        val = SequenceDataset(work, df, fold=0, train=False, cfg=cfg)
    assert ds._uses_sbi() and not val._uses_sbi()
    idx = ds.epoch_indices(0, 400)
    labels = [ds.effective_label(i) for i in idx]
    assert labels.count(1) == labels.count(0) == 200
    assert 60 < sum(ds.decode_index(i)[1] == SBI_FORCE for i in idx) < 140
    ds.augment = Augmenter(cfg, train=False)  # the blend alone
    n, row = len(ds.rows), int(np.flatnonzero((ds.rows.video == "part/real0") & (ds.rows.frame == 0))[0])
    fake = ds.get_item(row + SBI_FORCE * n, rng=np.random.default_rng(0))
    plain = ds.get_item(row + SBI_NEVER * n, rng=np.random.default_rng(0))
    assert float(fake["label"]) == 1.0 and float(plain["label"]) == 0.0
    assert fake["image"].shape == plain["image"].shape == (3, 3, 32, 32)
    assert all(torch.equal(fake["image"][k], fake["image"][0]) for k in range(3))  # one draw for the clip
    assert (fake["image"][0] - plain["image"][0]).abs().max() > 0.05
    other = ds.get_item(row + SBI_FORCE * n, rng=np.random.default_rng(1))["image"][0]
    assert not torch.equal(other, fake["image"][0])
    fake_row = int(np.flatnonzero(ds.rows.label == 1)[0])  # a FAKE row stays itself in any mode
    assert float(ds.get_item(fake_row + SBI_FORCE * n, rng=np.random.default_rng(0))["label"]) == 1.0
    assert {float(ds.get_item(row, rng=np.random.default_rng(s))["label"]) for s in range(16)} == {0.0, 1.0}
    with pytest.raises(IndexError):
        ds.get_item(3 * n)


# --------------------------------------------------------------------------- datasets on a synthetic work dir
def test_missing_crop_uses_substitute(tmp_path):
    work = make_work(tmp_path)
    df = load_folds(work)
    os.remove(tmp_path / df.file[0])  # a REAL crop of fold 0
    (tmp_path / df.file[3]).write_bytes(b"not a png")  # a FAKE crop of fold 0
    ds = FrameDataset(work, df, fold=1, train=True, cfg=C(32))
    with pytest.warns(UserWarning, match="skipping"):
        items = [ds[i] for i in range(len(ds))]
    assert all(it["image"].shape == (3, 32, 32) for it in items)
    assert items[0]["file"] != df.file[0] and items[0]["label"] == 0  # same label, another row
    assert items[3]["label"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = SequenceDataset(work, df, fold=1, train=False, cfg=C(32, dataset="sequences", seq_len=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert seq[0]["image"].shape == (3, 3, 32, 32)


def test_frame_dataset_items_synthetic(tmp_path):
    work = make_work(tmp_path)
    df = load_folds(work)
    for train in (True, False):
        ds = FrameDataset(work, df, fold=0, train=train, cfg=C(48))
        assert set(ds.rows.fold) == ({1} if train else {0})
        item = ds[0]
        assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
        assert item["label"].dtype == torch.float32 and item["label"].ndim == 0
        assert isinstance(item["video"], str) and item["file"].startswith("crops/")
    a = ds.get_item(1, rng=np.random.default_rng(0))["image"]
    assert torch.equal(a, ds.get_item(1, rng=np.random.default_rng(0))["image"])


# --------------------------------------------------------------------------- the generated sample
@pytest.mark.slow
def test_every_dataset_item_shapes(sample_work):
    work, _ = sample_work
    df = load_folds(work)
    cases = [(FrameDataset, {}), (FrameDataset, {"sbi": True}), (PairDataset, {"reencode_prob": 0.5}),
             (SequenceDataset, {"dataset": "sequences", "seq_len": 4}),
             (PairDataset, {"augment": "ntech", "resize": "shortest", "random_erasing": 0.5, "size": [64, 56]})]
    for cls, kw in cases:
        for train in (True, False):
            kw = dict(kw)
            size = kw.pop("size", 64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sequences without clip crops
                ds = cls(work, df, 0, train, C(size, **kw), seed=1)
            assert len(ds) > 0
            for i in range(0, len(ds), 4):
                item = ds[i]
                h, w = (size, size) if isinstance(size, int) else size
                shape = (4, 3, h, w) if cls is SequenceDataset else (3, h, w)
                assert item["image"].shape == shape and item["image"].dtype == torch.float32
                assert torch.isfinite(item["image"]).all()
                assert item["label"].dtype == torch.float32 and 0 <= float(item["label"]) <= 1
                assert (work / item["file"]).is_file() and item["video"] in item["file"]
    ds = FrameDataset(work, df, 0, True, C(64))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=BalancedSampler(ds, 8, seed=0), num_workers=0)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["image"].shape == (4, 3, 64, 64)
    assert sum(float(b["label"].sum()) for b in batches) == 4


def _pixels(x: torch.Tensor) -> np.ndarray:
    """A (3, H, W) tensor normalised with mean 0, std 1 back to uint8-range (H, W, 3) ints."""
    return np.round(x.permute(1, 2, 0).numpy() * 255).astype(int)


@pytest.mark.slow
def test_pair_dataset_shares_augmentation(sample_work):
    work, _ = sample_work
    df = load_folds(work)
    for kw in ({}, {"augment": "ntech", "resize": "shortest", "size": [96, 80], "random_erasing": 0.5}):
        size = kw.pop("size", 96)
        ds = PairDataset(work, df, fold=-1, train=True, cfg=C(size, mean=(0, 0, 0), std=(1, 1, 1), **kw))
        assert (ds.rows.label == 1).all() and (ds.rows.original != "").all()
        diffs_aligned, diffs_misaligned = [], []
        for i in range(len(ds)):
            real_t, fake_t, row = ds.augmented_pair(i, np.random.default_rng(i))
            for t, expected in ((0.0, real_t), (1.0, fake_t)):
                item = ds.get_item(i, rng=np.random.default_rng(i), t=t)
                assert torch.allclose(item["image"], expected, atol=1e-5)
                assert float(item["label"]) == t
            real, fake = _pixels(real_t), _pixels(fake_t)
            # outside the face the pair stays pixel-aligned through the augmentation
            border = np.ones(real.shape[:2], bool)
            border[20:-20, 20:-20] = False
            content = border & (real.max(-1) > 0) & (fake.max(-1) > 0)  # not the black padding
            diffs_aligned.append(np.abs(real - fake)[content].mean())
            other = _pixels(ds.augmented_pair(i, np.random.default_rng(i + 100))[1])
            content = border & (real.max(-1) > 0) & (other.max(-1) > 0)
            diffs_misaligned.append(np.abs(real - other)[content].mean())
        assert np.mean(diffs_aligned) < 12 and np.mean(diffs_aligned) < np.mean(diffs_misaligned) / 2, kw
    # a random t is the label and the mixing weight
    item = ds.get_item(0, rng=np.random.default_rng(3))
    real_t, fake_t, _ = ds.augmented_pair(0, np.random.default_rng(3))
    t = float(item["label"])
    assert 0 <= t <= 1
    assert torch.allclose(item["image"], (1 - t) * real_t + t * fake_t, atol=1e-5)
    val = PairDataset(work, df, fold=0, train=False, cfg=C(64))
    assert len(val) == 2 * len(val.rows) and [float(val[k]["label"]) for k in range(2)] == [0.0, 1.0]


@pytest.mark.slow
def test_pair_reencode_same_settings(sample_work):
    work, _ = sample_work
    df = load_folds(work)
    cfg = C(96, mean=(0, 0, 0), std=(1, 1, 1), reencode_prob=1.0)
    ds = PairDataset(work, df, fold=-1, train=True, cfg=cfg)
    ds.augment = Augmenter(cfg, train=False)  # only the re-encoding is random
    with pytest.warns(UserWarning, match="intra frames only"):  # the sample has no clip crops
        real_t, fake_t, _ = ds.augmented_pair(0, np.random.default_rng(0))
    ds.reencode_prob = 0.0
    plain_real, _, _ = ds.augmented_pair(0, np.random.default_rng(0))
    real, fake = _pixels(real_t), _pixels(fake_t)
    assert 0 < np.abs(real - _pixels(plain_real)).mean() < 40
    border = np.ones(real.shape[:2], bool)
    border[20:-20, 20:-20] = False
    content = border & (real.max(-1) > 0)
    assert np.abs(real - fake)[content].mean() < 12  # both went through the same codec settings


@pytest.mark.slow
def test_sbi_on_sample_crops(sample_work):
    work, _ = sample_work
    df = load_folds(work)
    real_row = df[df.label == 0].iloc[0]
    img = read_png(work / real_row.file)
    points = np.load(WorkDir(work).landmarks(real_row.video, real_row.frame, real_row.face))
    fake, mask = self_blend(img, points, np.random.default_rng(0))
    assert 0 <= mask.min() and mask.max() <= 1 and mask.max() >= 0.25
    changed = (fake != img).any(-1)
    assert changed.sum() > 100 and not (changed & (mask == 0)).any()
    assert np.array_equal(fake, self_blend(img, points, np.random.default_rng(0))[0])


@pytest.mark.slow
def test_real_only_split_trains_with_sbi(sample_work):
    work, _ = sample_work
    df = load_folds(work)
    reals = df[df.label == 0]
    ds = FrameDataset(work, reals, fold=-1, train=True, cfg=C(64, sbi=True, hardcore=False))
    labels = [float(ds[i]["label"]) for i in ds.epoch_indices(0, 12)]
    assert labels.count(1.0) == labels.count(0.0) == 6
    auto = {float(ds.get_item(0, rng=np.random.default_rng(s))["label"]) for s in range(12)}
    assert auto == {0.0, 1.0}


@pytest.mark.slow
def test_train_fakes_false_trains_on_reals_and_their_sbi_fakes_alone(sample_work):
    from training.engine import build_datasets

    work, _ = sample_work
    df = load_folds(work)
    fold = int(df[df.label == 1].fold.iloc[0])  # a validation fold with fakes
    cfg = C(64, sbi=True, sbi_pairs=True, hardcore=False, train_fakes=False)
    train, val = build_datasets(cfg, work, fold, seed=0)
    assert (train.rows.label == 0).all() and set(train.rows.video) == set(df[(df.fold != fold) & (df.label == 0)].video)
    assert (val.rows.label == 1).any() and len(val.rows) == len(df[df.fold == fold])  # validation keeps its fakes
    labels = [float(train[i]["label"]) for i in train.epoch_indices(0, 8)]
    assert labels.count(1.0) == labels.count(0.0) == 4  # every fake an SBI fake of a REAL
    full, _ = build_datasets(C(64, sbi=True, sbi_pairs=True, hardcore=False), work, fold, seed=0)
    assert (full.rows.label == 1).any()  # the default keeps the training fakes


@pytest.mark.slow
def test_sequence_dataset_frames(sample_work):
    work, _ = sample_work
    df = load_folds(work)
    with pytest.warns(UserWarning, match="no clip crops"):
        ds = SequenceDataset(work, df, fold=-1, train=True, cfg=C(64, dataset="sequences", seq_len=5))
    first = ds.rows.index[(ds.rows.frame == 0)][0]
    assert [int(ds.rows.frame[j]) for j in ds.sequences[first]] == [0, 10, 20, 20, 20]
    last = ds.rows.index[(ds.rows.frame == 20)][0]
    assert [int(ds.rows.frame[j]) for j in ds.sequences[last]] == [20] * 5
    assert len({ds.rows.video[j] for j in ds.sequences[first]}) == 1
    item = ds.get_item(first, rng=np.random.default_rng(1))
    x = item["image"]
    assert x.shape == (5, 3, 64, 64)
    # the repeated frame got the same augmentation as its copies: one set of parameters
    assert torch.equal(x[2], x[4]) and not torch.equal(x[0], x[1])
    idx = ds.epoch_indices(0, 10)
    assert (ds.labels[idx] == 1).sum() == 5


def _with_clip_crops(work, dest, frame):
    """A copy of a work dir as step 1 --clip-len `span` would leave it: clip crops named
    by their anchor, `frame(crop, j)` the crop of the anchor's j-th following frame.
    Returns (dest, df, fps, stride, span) for 3-frame clips at 5 fps."""
    import json
    import shutil

    from preprocessing.artifacts import clip_crop_name

    shutil.copytree(work, dest)
    df = load_folds(dest)
    fps = json.loads((dest / "boxes" / f"{df.original[df.label == 0].iloc[0]}.json").read_text())["fps"]
    stride = max(1, round(fps / 5))  # 5 fps clips
    span = 2 * stride + 1            # 3 frames
    for video in df.video.unique():
        manifest = json.loads((dest / "crops" / video / "crops.json").read_text())
        manifest["clip_len"] = span
        (dest / "crops" / video / "crops.json").write_text(json.dumps(manifest))
        for r in df[df.video == video].itertuples():
            crop = read_png(dest / r.file)
            for j in range(1, span):
                (dest / "crops" / video / clip_crop_name(r.frame, r.face, j)).write_bytes(encode_png(frame(crop, j)))
    return dest, df, fps, stride, span


@pytest.mark.slow
def test_sequence_reads_clip_crops_at_the_clip_frame_rate(sample_work, tmp_path):
    """NTech's clips: seq_len frames 1/clip_fps apart, from step 1's consecutive crops
    (named by their anchor), every frame cut with the anchor's box."""
    work, _ = sample_work
    w2, df, fps, stride, span = _with_clip_crops(work, tmp_path / "w", lambda crop, j: np.full_like(crop, 10 * j))
    cfg = C(64, mean=(0, 0, 0), std=(1, 1, 1), dataset="sequences", seq_len=3, clip_fps=5)
    ds = SequenceDataset(w2, df, fold=0, train=False, cfg=cfg)
    image = ds.get_item(0)["image"]
    assert image.shape == (3, 3, 64, 64)
    assert image[1].max().item() == pytest.approx(10 * stride / 255, abs=0.01)
    assert image[2].max().item() == pytest.approx(20 * stride / 255, abs=0.01)
    too_long = C(64, dataset="sequences", seq_len=3, clip_fps=fps / (stride + 1) if stride < 3 else 1)
    with pytest.raises(ValueError, match="--clip-len"):
        SequenceDataset(w2, df, fold=0, train=False, cfg=too_long)


@pytest.mark.slow
def test_sequence_sbi_blends_before_reencoding(sample_work, tmp_path, monkeypatch):
    """An SBI clip is made as a fake video is: blended first (every frame of the run, one
    draw), then re-encoded; the codec sees the blend."""
    import training.datasets as datasets

    work, _ = sample_work
    w2, df, _, _, span = _with_clip_crops(work, tmp_path / "w", _brighter)
    cfg = C(64, mean=(0, 0, 0), std=(1, 1, 1), dataset="sequences", seq_len=3, clip_fps=5, sbi=True,
            reencode_prob=1.0)
    ds = SequenceDataset(w2, df, fold=-1, train=True, cfg=cfg)
    ds.augment = Augmenter(cfg, train=False)
    encoded = []
    real_encode = datasets.reencode_clip
    monkeypatch.setattr(datasets, "reencode_clip", lambda clip, *a, **k: encoded.append(clip) or real_encode(clip, *a, **k))
    n, row = len(ds.rows), int(np.flatnonzero(ds.rows.label == 0)[0])
    fake = ds.get_item(row + SBI_FORCE * n, rng=np.random.default_rng(0))
    plain = ds.get_item(row + SBI_NEVER * n, rng=np.random.default_rng(0))
    assert float(fake["label"]) == 1.0 and float(plain["label"]) == 0.0
    assert fake["image"].shape == plain["image"].shape == (3, 3, 64, 64)
    blended, raw = encoded
    assert blended.shape == raw.shape and len(raw) == span  # the whole run went to the codec
    changed = (blended != raw).any(-1).mean(axis=(1, 2))
    assert (changed > 0.02).all()  # every frame of the run was blended before encoding
    assert 0 < (fake["image"] - plain["image"]).abs().mean() * 255 < 40


def _brighter(crop, j):
    """The anchor's crop a little brighter per frame: a clip with visible, aligned motion."""
    return np.clip(crop.astype(int) + 12 * j, 0, 255).astype(np.uint8)


@pytest.mark.slow
def test_sequence_pairs_mix_aligned_clips_augmented_alike(sample_work, tmp_path):
    """NTech's sequence model learns from aligned (real clip, fake clip) pairs: the fake's
    clip and its original's at the same frames, one augmentation for all 2T frames, one
    re-encoding draw for both clips, and the clips mixed as a whole with the label t."""
    work, _ = sample_work
    w2, df, _, _, _ = _with_clip_crops(work, tmp_path / "w", _brighter)
    cfg = C([64, 56], mean=(0, 0, 0), std=(1, 1, 1), dataset="sequence_pairs", seq_len=3, clip_fps=5,
            augment="ntech", resize="shortest", random_erasing=0.5)
    ds = SequencePairDataset(w2, df, fold=-1, train=True, cfg=cfg)
    assert (ds.rows.label == 1).all() and (ds.rows.original != "").all() and ds.use_clip_crops
    assert not ds.balanced_epochs  # every item holds a real and a fake: the sampler draws pairs uniformly
    border = np.ones((64, 56), bool)
    border[16:-16, 16:-16] = False
    aligned, misaligned = [], []
    for i in range(len(ds)):
        real, fake, row = ds.augmented_pair(i, np.random.default_rng(i))
        assert real.shape == fake.shape == (3, 3, 64, 56)
        for t, expected in ((0.0, real), (1.0, fake)):
            item = ds.get_item(i, rng=np.random.default_rng(i), t=t)
            assert torch.allclose(item["image"], expected, atol=1e-5) and float(item["label"]) == t
        for k in range(3):  # every frame of both clips went through the same transform
            r, f = _pixels(real[k]), _pixels(fake[k])
            content = border & (r.max(-1) > 0) & (f.max(-1) > 0)
            aligned.append(np.abs(r - f)[content].mean())
        r = _pixels(real[0])
        other = _pixels(ds.augmented_pair(i, np.random.default_rng(i + 100))[1][0])
        content = border & (r.max(-1) > 0) & (other.max(-1) > 0)
        misaligned.append(np.abs(r - other)[content].mean())
    assert np.mean(aligned) < 12 and np.mean(aligned) < np.mean(misaligned) / 2
    item = ds.get_item(0, rng=np.random.default_rng(5))
    real, fake, _ = ds.augmented_pair(0, np.random.default_rng(5))
    t = float(item["label"])
    assert 0 < t < 1 and torch.allclose(item["image"], (1 - t) * real + t * fake, atol=1e-5)

    # re-encoding: both clips with one draw (frames drop alike), different from the plain clip
    cfg = C(64, mean=(0, 0, 0), std=(1, 1, 1), dataset="sequence_pairs", seq_len=3, clip_fps=5, reencode_prob=1.0)
    ds = SequencePairDataset(w2, df, fold=-1, train=True, cfg=cfg)
    ds.augment = Augmenter(cfg, train=False)
    real, fake, _ = ds.augmented_pair(0, np.random.default_rng(0))
    ds.reencode_prob = 0.0
    plain, _, _ = ds.augmented_pair(0, np.random.default_rng(0))
    assert 0 < (real - plain).abs().mean() * 255 < 40
    r, f = _pixels(real[0]), _pixels(fake[0])
    border = np.ones((64, 64), bool)
    border[16:-16, 16:-16] = False
    assert np.abs(r - f)[border & (r.max(-1) > 0)].mean() < 12  # the same codec settings
    with pytest.raises(ValueError, match="no paired fakes"):
        SequencePairDataset(w2, df[df.label == 0], fold=-1, train=True, cfg=cfg)


@pytest.mark.slow
def test_pair_reencodes_whole_clips_from_clip_crops(sample_work, tmp_path):
    """With clip crops, the frame-pair dataset re-encodes the original's and the fake's
    clips as videos (no intra-frame-only warning) and takes the same frame after the first
    (the stream's intra frame) from both, as NTech took frames from the middle of a track."""
    work, _ = sample_work
    w2, df, _, _, _ = _with_clip_crops(work, tmp_path / "w", _brighter)
    cfg = C(64, mean=(0, 0, 0), std=(1, 1, 1), reencode_prob=1.0)
    ds = PairDataset(w2, df, fold=-1, train=True, cfg=cfg)
    ds.augment = Augmenter(cfg, train=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        real, fake, _ = ds.augmented_pair(0, np.random.default_rng(0))
    ds.reencode_prob = 0.0
    plain, plain_fake, _ = ds.augmented_pair(0, np.random.default_rng(0))
    assert 0 < (real - plain).abs().mean() * 255 < 40
    # every clip frame is 12 levels brighter than the one before: a later frame than the anchor
    # (the tensors are in [0, 1]), the same one for the real and the fake
    shift, shift_fake = [float((a - b).mean() * 255) for a, b in ((real, plain), (fake, plain_fake))]
    assert shift > 6 and abs(shift - shift_fake) < 3
    ds.reencode_prob = 1.0
    shifts = [float((ds.augmented_pair(0, np.random.default_rng(seed))[0] - plain).mean() * 255) for seed in range(1, 9)]
    assert min(shifts) > 6 and max(shifts) - min(shifts) > 6  # never the intra frame, nor always one frame
