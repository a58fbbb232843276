import numpy as np
import skimage.data

from preprocessing.crops import crop_box
from preprocessing.landmarks import crop_landmarks


def _astronaut_crop(detector, extra_width=0):
    img = skimage.data.astronaut()
    det = detector.detect([img])[0]
    x1, y1, x2, y2 = crop_box(det.boxes[0], 512, 512)
    return img[y1:y2, x1:x2 + extra_width], det.landmarks[0] - [x1, y1]


def test_landmarks_in_crop_pixels_match_the_full_frame_detection(detector):
    crop, expected = _astronaut_crop(detector)
    (points,) = crop_landmarks(detector, [crop])
    assert points.shape == (5, 2) and points.dtype == np.float32
    assert np.abs(points - expected).max() < 6  # padding + resize mapped back correctly
    left_eye, right_eye, nose, mouth_l, mouth_r = points
    assert left_eye[1] < nose[1] < mouth_l[1] and right_eye[1] < nose[1] < mouth_r[1]
    assert left_eye[0] < right_eye[0]


def test_non_square_crops_and_no_face(detector):
    crop, _ = _astronaut_crop(detector)
    wide, _ = _astronaut_crop(detector, extra_width=120)  # same origin, 120 px more on the right
    cup = skimage.data.coffee()[:200, :300]
    a, b, c = crop_landmarks(detector, [crop, wide, cup])
    assert c is None
    assert wide.shape[1] > wide.shape[0] > 0
    np.testing.assert_allclose(b, a, atol=6)  # same face, same crop pixels
