import numpy as np
import pytest
import skimage.data

from preprocessing.detection import detection_scale


def test_detection_scale_from_resolution():
    assert detection_scale(1920, 1080) == pytest.approx(0.5)
    assert detection_scale(1080, 1920) == pytest.approx(0.5)  # portrait: long side counts
    assert detection_scale(3840, 2160) == pytest.approx(0.25)
    assert detection_scale(360, 288) == 1.0  # small frames are never upscaled
    assert detection_scale(640, 480, long_side=320) == pytest.approx(0.5)


def test_finds_the_astronaut_and_nothing_in_coffee(detector):
    face, cup = detector.detect([skimage.data.astronaut()])[0], detector.detect([skimage.data.coffee()])[0]
    assert len(face.boxes) == 1 and face.probs[0] > 0.99
    x1, y1, x2, y2 = face.boxes[0]
    assert 150 < x1 < x2 < 300 and 40 < y1 < y2 < 200  # Eileen Collins' face
    assert face.landmarks.shape == (1, 5, 2)
    assert len(cup.boxes) == 0 and cup.boxes.shape == (0, 4) and cup.landmarks.shape == (0, 5, 2)


def test_downscaled_detection_returns_full_resolution_boxes(detector):
    img = skimage.data.astronaut()
    full = detector.detect([img])[0].boxes[0]
    half = detector.detect([img], scale=0.5)[0].boxes[0]
    assert np.abs(full - half).max() < 10  # same face, same pixels (up to the detector's jitter)


def test_batch_matches_single(detector):
    img = skimage.data.astronaut()
    single = detector.detect([img])[0]
    batch = detector.detect([img, np.ascontiguousarray(img[:, ::-1]), img])
    assert len(batch) == 3
    np.testing.assert_allclose(batch[0].boxes, single.boxes, atol=1e-3)
    np.testing.assert_allclose(batch[2].boxes, single.boxes, atol=1e-3)
    mirrored = batch[1].boxes[0]
    assert abs((512 - mirrored[2]) - single.boxes[0][0]) < 8  # flipped face found where expected


def test_min_face_size_follows_the_detection_resolution():
    from preprocessing.detection import min_face_size

    assert min_face_size(1920, 1080, 0.5) == 34  # 3.5% of 960
    assert min_face_size(360, 288, 1.0) == 20  # never below MTCNN's usual 20
    assert min_face_size(3840, 2160, 0.25) == 34
