"""selim's hardcore blackouts (training/augmentations.py)."""
import numpy as np
import pytest

from preprocessing.artifacts import WorkDir, read_png
from training.augmentations import (apply_hardcore, blackout_convex_hull_half, blackout_landmark_part,
                                    diff_mask, hull_half_mask, landmark_part_mask)
from training.datasets import load_folds
from training.sbi import self_blend

from test_datasets import LANDMARKS5, smooth_image


# --------------------------------------------------------------------------- hardcore
def test_blackout_landmark_part_changes_pixels():
    img = smooth_image()
    for part in ("eyes", "nose", "mouth"):
        out = blackout_landmark_part(img, LANDMARKS5, np.random.default_rng(0), part=part)
        black = (out != img).any(-1)
        assert black.sum() > 30 and (out[black] == 0).all()
        assert not (img == 0).all(-1).any()  # the input is untouched (pure function)
    eyes = landmark_part_mask(img.shape, LANDMARKS5, "eyes")
    assert eyes[52, 36] and eyes[50, 68] and not eyes[84, 42]


def test_hull_half_mask_halves():
    pts = np.array([[20, 20], [80, 20], [80, 100], [20, 100]], np.float32)
    full = hull_half_mask((131, 107), pts, "left") | hull_half_mask((131, 107), pts, "right")
    assert abs(hull_half_mask((131, 107), pts, "left").sum() - full.sum() / 2) < full.sum() * 0.05
    assert hull_half_mask((131, 107), pts, "top")[30, 50] and not hull_half_mask((131, 107), pts, "top")[90, 50]


def test_hardcore_respects_diff_rule():
    img = smooth_image()
    manipulated_eyes = np.zeros(img.shape[:2], np.uint8)
    manipulated_eyes[landmark_part_mask(img.shape, LANDMARKS5, "eyes")] = 255  # only the eyes are fake
    applied = 0
    for s in range(40):
        out, mask = apply_hardcore(img, 1, LANDMARKS5, manipulated_eyes, np.random.default_rng(s), prob=1.0,
                                   landmark_prob=1.0, min_manipulated_fraction=0.02, return_mask=True)
        remaining = (diff_mask(manipulated_eyes) & ~mask).mean()
        if mask.any():
            applied += 1
            assert remaining >= 0.02 and (out[mask] == 0).all()
        else:
            assert np.array_equal(out, img)
    assert applied > 5  # nose and mouth blackouts leave the eyes: allowed
    # a REAL crop is always blacked out (prob 1); a fake without a diff never is
    out = apply_hardcore(img, 0, LANDMARKS5, None, np.random.default_rng(0), prob=1.0, landmark_prob=1.0)
    assert (out != img).any()
    assert np.array_equal(apply_hardcore(img, 1, LANDMARKS5, None, np.random.default_rng(0), prob=1.0), img)



@pytest.mark.slow
def test_hardcore_on_sample_crops(sample_work):
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
    out = blackout_convex_hull_half(img, np.random.default_rng(0))
    assert (out != img).any(-1).mean() > 0.05  # dlib found the face: a half hull is black
    fake_row = df[(df.label == 1) & (df.original != "")].iloc[0]
    diff = read_png(WorkDir(work).diff(fake_row.video, fake_row.frame, fake_row.face), gray=True)
    fake_img = read_png(work / fake_row.file)
    for s in range(10):
        out, black = apply_hardcore(fake_img, 1, points, diff, np.random.default_rng(s), prob=1.0,
                                    min_manipulated_fraction=0.05, return_mask=True)
        assert not black.any() or (diff_mask(diff) & ~black).mean() >= 0.05


