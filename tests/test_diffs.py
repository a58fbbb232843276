import numpy as np
import pytest

from preprocessing.diffs import ssim_diff


def test_identical_crops_give_a_black_mask():
    img = np.random.default_rng(0).integers(0, 255, (64, 48, 3), dtype=np.uint8)
    d = ssim_diff(img, img)
    assert d.shape == (64, 48) and d.dtype == np.uint8 and d.max() == 0


def test_changed_region_is_bright_the_rest_dark():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    fake = img.copy()
    fake[32:64, 32:64] = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    d = ssim_diff(img, fake).astype(float)
    assert d[36:60, 36:60].mean() > 150
    assert d[:20].mean() < 5 and d[-20:].mean() < 5


def test_misaligned_crops_are_an_error():
    with pytest.raises(ValueError, match="not aligned"):
        ssim_diff(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 12, 3), np.uint8))
