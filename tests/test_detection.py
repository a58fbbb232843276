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

    # 4% of the short side (540 px at 960 wide), not 3.5% of the long side (34 px): a dark
    # full-body face, 5% of the frame height, is 27 px there and must be looked for.
    assert min_face_size(1920, 1080, 0.5) == 21
    assert min_face_size(1920, 1080, 0.5) <= 0.05 * 1080 * 0.5
    assert min_face_size(1080, 1920, 0.5) == 21  # portrait: the short side too
    assert min_face_size(3840, 2160, 0.25) == 21
    assert min_face_size(1280, 720, 0.75) == 21
    assert min_face_size(640, 480, 1.0) == 20  # never below MTCNN's usual 20...
    assert min_face_size(844, 844, 1.0) == 33  # a talking head: 4% of 844
    # ... unless a 5%-height face is smaller than that: 14 px at 512 (the prediction scale)
    assert min_face_size(1920, 1080, 512 / 1920) == 14
    assert min_face_size(360, 288, 1.0) == 14
    assert min_face_size(320, 240, 1.0) == 12  # P-Net's window: no finer
    for w, h in [(1920, 1080), (1080, 1920), (1280, 720), (640, 480), (360, 288), (3840, 2160)]:
        for long_side in (512, 960, 1 << 16):
            scale = detection_scale(w, h, long_side)
            short = min(w, h) * scale
            assert 12 <= min_face_size(w, h, scale) <= max(12, 0.05 * short), (w, h, long_side)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_step0_finds_a_small_face_in_a_dark_full_body_shot(detector, tmp_path):
    """A 1080p dark shot whose face is 5% of the frame height (54 px, 27 px at 960): step 0
    finds it on every sampled frame (with 3.5% of the long side, 34 px, it did not)."""
    from helpers import dark_full_body_clip
    from preprocessing.faces import detect_video

    path = tmp_path / "dark.mp4"
    truth = dark_full_body_clip(path, frames=12, darkness=0.25)
    boxes, counters = detect_video(detector, path)
    assert (boxes.width, boxes.height) == (1920, 1080) and sorted(boxes.frames) == [0, 10]
    for idx, faces in boxes.frames.items():
        assert len(faces) == 1, (idx, faces)
        assert _iou(faces[0][:4], truth[idx]) > 0.6, (idx, faces, truth[idx])


def test_prediction_finds_a_small_face_in_a_dark_full_body_shot(detector):
    """The prediction shortcut (every 4th anchor at 512) finds the same face, at the
    fast scale or by its retry at larger ones, and gives every anchor its box."""
    from helpers import dark_full_body_frame
    from inference.predictor import FaceExtractor

    anchors = list(range(0, 80, 10))
    frames, truth = {}, {}
    for i, a in enumerate(anchors):
        frames[a], truth[a] = dark_full_body_frame(darkness=0.25, x=0.6 - 0.0005 * i, noise_seed=i)
    extractor = FaceExtractor(detect_every=4)
    extractor._local.detector = detector  # the session's MTCNN (same settings), loaded once
    boxes, detected, long_side = extractor.detect_boxes(frames, anchors)
    assert long_side <= 960  # found at the fast scale or at step 0's, not at full resolution
    assert detected in (2, 4)  # anchors 0 and 40, once or twice
    assert sorted(boxes) == anchors
    for a in anchors:
        assert len(boxes[a]) == 1, (a, boxes[a])
        assert _iou(boxes[a][0], truth[a]) > 0.5, (a, boxes[a], truth[a])
