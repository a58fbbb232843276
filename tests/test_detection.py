import cv2
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



def test_cpu_detector_runs_in_channels_last_with_the_same_boxes(detector):
    """On a CPU, MTCNN's conv weights are NHWC (faster on oneDNN); the boxes, scores and
    landmarks are those of the same networks in the default order."""
    import torch

    assert detector.device == "cpu"
    weights = [w for net in (detector.mtcnn.pnet, detector.mtcnn.rnet, detector.mtcnn.onet)
               for w in net.parameters() if w.dim() == 4]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert any(not w.is_contiguous() for w in weights)
    frames = [skimage.data.astronaut(), np.ascontiguousarray(skimage.data.astronaut()[:, ::-1])]
    fast = detector.detect(frames)
    for w in weights:
        w.data = w.data.contiguous()
    try:
        plain = detector.detect(frames)
    finally:
        for w in weights:
            w.data = w.data.contiguous(memory_format=torch.channels_last)
    for a, b in zip(fast, plain):
        assert len(a.boxes) == len(b.boxes) == 1
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.01)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.01)

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


def test_square_boxes_and_padded_crops():
    """MTCNN's squares about the box centre; a crop reaching past the frame is padded with
    zeros (the original MTCNN's padding), inside it is the frame's pixels resized."""
    from preprocessing.detection import padded_crop, square_boxes

    np.testing.assert_allclose(square_boxes(np.array([[10, 20, 30, 60], [0, 0, 40, 10]])),
                               [[0, 20, 40, 60], [0, -15, 40, 25]])
    frame = np.random.default_rng(0).integers(1, 256, (100, 120, 3), dtype=np.uint8)
    # facenet-pytorch's MTCNN counts pixels from 1: a box from 20 to 67.9 is columns 19..66
    np.testing.assert_array_equal(padded_crop(frame, [20, 10, 67.9, 57.9], 24),
                                  cv2.resize(frame[9:57, 19:67], (24, 24), interpolation=cv2.INTER_AREA))
    edge = padded_crop(frame, [-47, -47, 48, 48], 48)  # columns -48..47: the top-left quarter is outside
    assert edge.shape == (48, 48, 3)
    assert (edge[:24, :24] == 0).all() and (edge[:24, 24:] == 0).all() and (edge[24:, :24] == 0).all()
    assert (edge[24:, 24:] > 0).all()
    np.testing.assert_array_equal(edge[24:, 24:], cv2.resize(frame[:48, :48], (24, 24), interpolation=cv2.INTER_AREA))


def test_refine_moves_a_misplaced_box_back_onto_the_face(detector):
    """R-Net + O-Net on a box that is off the face by a fifth of its size and too large (the
    error of a box interpolated between two detections) land back on the detector's own
    box; a box where there is no face stays where it was; every frame keeps its boxes' count
    and order."""
    img = skimage.data.astronaut()
    face = detector.detect([img])[0].boxes[0]
    w, h = face[2] - face[0], face[3] - face[1]
    off = face + np.array([0.2 * w, -0.15 * h, 0.35 * w, 0.1 * h], np.float32)
    empty = np.array([400, 380, 480, 460], np.float32)  # the lower right: no face there
    assert _iou(off, face) < 0.6
    out = detector.refine([img, img, skimage.data.coffee()],
                          [np.stack([off, empty]), np.zeros((0, 4), np.float32), np.array([[100, 100, 200, 200]])])
    assert [len(d.boxes) for d in out] == [2, 0, 1] and out[1].boxes.shape == (0, 4)
    assert _iou(out[0].boxes[0], face) > 0.85, (out[0].boxes[0], face)
    assert out[0].probs[0] > 0.99 and out[0].landmarks.shape == (2, 5, 2)
    assert face[0] < out[0].landmarks[0, 0, 0] < out[0].landmarks[0, 1, 0] < face[2]  # eyes inside, left first
    np.testing.assert_array_equal(out[0].boxes[1], empty)  # not a face: left in place
    np.testing.assert_array_equal(out[2].boxes[0], [100, 100, 200, 200])
    assert out[0].probs[1] < 0.9 and out[2].probs[0] < 0.9
    assert detector.refine([img], [np.zeros((0, 4), np.float32)])[0].boxes.shape == (0, 4)
    # the detector's own box and landmarks stay within a few pixels (the face is 87 px wide)
    det = detector.detect([img])[0]
    again = detector.refine([img], [det.boxes])[0]
    np.testing.assert_allclose(again.boxes, det.boxes, atol=3)
    np.testing.assert_allclose(again.landmarks, det.landmarks, atol=3)
    # two boxes that both land on the one face: the likelier is refined, the other stays put
    near = face + np.array([0.1 * w, 0.05 * h, 0.1 * w, 0.05 * h], np.float32)
    both = detector.refine([img], [np.stack([off, near])])[0]
    moved = [_iou(b, face) > 0.85 for b in both.boxes]
    stayed = [np.array_equal(b, x) for b, x in zip(both.boxes, [off, near])]
    assert sorted(moved) == [False, True] and sorted(stayed) == [False, True] and moved != stayed, both.boxes
    assert both.probs[moved.index(True)] >= both.probs[stayed.index(True)]  # the likelier one kept its place


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
    # ... unless a 5%-height face is smaller than that: 14 px at 512 (6_predict --detect-size 512)
    assert min_face_size(1920, 1080, 512 / 1920) == 14
    assert min_face_size(360, 288, 1.0) == 14
    assert min_face_size(320, 240, 1.0) == 12  # P-Net's window: no finer
    for w, h in [(1920, 1080), (1080, 1920), (1280, 720), (640, 480), (360, 288), (3840, 2160)]:
        for long_side in (512, 960, 1 << 16):
            scale = detection_scale(w, h, long_side)
            short = min(w, h) * scale
            assert 12 <= min_face_size(w, h, scale) <= max(12, 0.05 * short), (w, h, long_side)


def _iou(a, b) -> float:
    """IoU of two x1, y1, x2, y2 boxes (the library's box_iou, one pair)."""
    from preprocessing.detection import box_iou

    return float(box_iou(np.asarray(a[:4], float)[None], np.asarray(b[:4], float)[None])[0, 0])


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
    """Prediction with its fast options (every 4th anchor at a long side of 512, the anchors
    between refined) finds the same face, at 512 or by its retry at step 0's 960, and gives
    every anchor its box."""
    from helpers import dark_full_body_frame
    from inference.predictor import FaceExtractor

    anchors = list(range(0, 80, 10))
    frames, truth = {}, {}
    for i, a in enumerate(anchors):
        frames[a], truth[a] = dark_full_body_frame(darkness=0.25, x=0.6 - 0.0005 * i, noise_seed=i)
    extractor = FaceExtractor(detect_every=4, detect_long_side=512)
    extractor._local.detector = detector  # the session's MTCNN (same settings), loaded once
    boxes, detected, long_side = extractor.detect_boxes(frames, anchors)
    assert long_side in (512, 960)  # found at the fast scale or at step 0's, not at full resolution
    assert detected in (3, 6)  # anchors 0, 40 and the last (70), once or twice
    assert sorted(boxes) == anchors
    for a in anchors:
        assert len(boxes[a]) == 1, (a, boxes[a])
        assert _iou(boxes[a][0], truth[a]) > 0.5, (a, boxes[a], truth[a])


def test_boxes_between_detections_are_interpolated_matched_by_overlap():
    """detect_every > 1 (#8's speed shortcut): an anchor between two detected ones takes
    each face found on both at the box linearly interpolated in time, exactly for a face
    moving at constant speed; a face found on one side only comes from the nearer side."""
    from inference.predictor import interpolate_boxes

    moving = lambda t: np.array([100 + 4 * t, 50 + t, 200 + 4 * t, 170 + t], np.float32)  # noqa: E731
    still = np.array([600, 80, 700, 200], np.float32)
    found = {0: np.stack([still, moving(0)]),  # the other order on the right: matched by overlap
             12: np.stack([moving(12), still]),
             24: np.stack([moving(24)])}  # the still face missed: nearer side decides
    anchors = [0, 3, 6, 9, 12, 15, 21, 24]
    out = interpolate_boxes(found, anchors)
    assert sorted(out) == anchors
    for a in (0, 12, 24):
        np.testing.assert_array_equal(out[a], found[a])
    for a in (3, 6, 9):  # the nearer detection's order (0's for 3 and 6; 12's for 9)
        assert out[a].shape == (2, 4)
        faces = {tuple(b) for b in out[a].round(4).tolist()}
        assert faces == {tuple(moving(a).tolist()), tuple(still.tolist())}, (a, out[a])
    np.testing.assert_allclose(out[3][0], still, atol=1e-4)
    np.testing.assert_allclose(out[9][0], moving(9), atol=1e-4)
    np.testing.assert_allclose(out[15][:1], moving(15)[None], atol=1e-4)  # nearer to 12, still face kept
    assert len(out[15]) == 2 and out[15][1].tolist() == still.tolist()
    np.testing.assert_allclose(out[21], moving(21)[None], atol=1e-4)  # nearer to 24: one face
    # faces that do not overlap are not the same face: no box drawn halfway across the frame
    jump = interpolate_boxes({0: moving(0)[None], 10: (moving(0) + 500)[None]}, [0, 4, 6, 10])
    np.testing.assert_array_equal(jump[4], moving(0)[None])
    np.testing.assert_array_equal(jump[6], (moving(0) + 500)[None])
    # no face on either side, and anchors outside the detections
    empty = interpolate_boxes({5: np.zeros((0, 4), np.float32), 10: moving(10)[None]}, [2, 5, 7, 8, 12])
    assert len(empty[2]) == 0 and len(empty[5]) == 0 and len(empty[7]) == 0
    np.testing.assert_array_equal(empty[8], moving(10)[None])
    np.testing.assert_array_equal(empty[12], moving(10)[None])


def test_every_kth_anchor_and_the_last_are_detected():
    """FaceExtractor.detect_boxes runs the detector on anchors[::k] and on the last anchor,
    and interpolates the rest from them."""
    from inference.predictor import FaceExtractor

    class Recorder:
        def __init__(self):
            self.seen = []

        def detect(self, frames, scale, min_size):
            from preprocessing.detection import Detection

            out = []
            for f in frames:
                t = float(f[0, 0, 0])
                self.seen.append(int(t))
                box = np.array([[10 + t, 10, 50 + t, 60]], np.float32)
                out.append(Detection(boxes=box, probs=np.ones(1, np.float32), landmarks=np.zeros((1, 5, 2))))
            return out

        def refine(self, frames, boxes):
            from preprocessing.detection import Detection

            self.refined += [int(f[0, 0, 0]) for f in frames]
            return [Detection(boxes=b + 1, probs=np.ones(len(b), np.float32), landmarks=np.zeros((len(b), 5, 2)))
                    for b in boxes]

    anchors = list(range(0, 11))
    frames = {a: np.full((120, 160, 3), a, np.uint8) for a in anchors}
    extractor = FaceExtractor(detect_every=4, refine=False)
    extractor._local.detector = rec = Recorder()
    rec.refined = []
    boxes, detected, _ = extractor.detect_boxes(frames, anchors)
    assert rec.seen == [0, 4, 8, 10] and detected == 4 and rec.refined == []
    for a in anchors:
        np.testing.assert_allclose(boxes[a], [[10 + a, 10, 50 + a, 60]], atol=1e-4)
    # refined (the default): R-Net + O-Net run on the interpolated boxes of the anchors between
    # detections only, and their boxes are the refined ones
    extractor = FaceExtractor(detect_every=4)
    extractor._local.detector = rec = Recorder()
    rec.refined = []
    boxes, detected, _ = extractor.detect_boxes(frames, anchors)
    assert rec.seen == [0, 4, 8, 10] and rec.refined == [1, 2, 3, 5, 6, 7, 9]
    for a in anchors:
        shift = 0 if a in rec.seen else 1
        np.testing.assert_allclose(boxes[a], [[10 + a + shift, 10 + shift, 50 + a + shift, 60 + shift]], atol=1e-4)
