"""Training crops = prediction crops: what a model sees in 6_predict is what it saw in training.

Steps 0-1 run on a video; the predictor's FaceExtractor runs on the same frames at step 0's
detection scale, and its crops must equal step 1's PNGs pixel for pixel, for selim's 1/3
margin and (re-cut by the training dataset) NTech's 0.25; the normalised model inputs must
then be equal too. 6_predict's default detects at that scale on every 8th anchor and the
last (their crops are step 1's too), and refines the boxes it interpolates between them; their
IoU against per-frame detection is measured on real videos by bench/boxes_iou.py.
"""
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import portrait_clip
from conftest import make_opts, write_metadata

MARGINS = (1 / 3, 0.25)


class _StepZeroFrames:
    """A FaceExtractor plan that samples exactly the given frames (step 0's)."""

    def __init__(self, frames):
        self.frames = list(frames)

    def __call__(self, reader):
        return self.frames, set(), set(self.frames)


@pytest.mark.slow
def test_predictor_crops_equal_step1_crops_on_the_same_frames(tmp_path):
    from inference.predictor import FaceExtractor, LoadedModel
    from preprocessing.artifacts import FaceBoxes, WorkDir, read_png
    from preprocessing.crops import extract_crops
    from preprocessing.detection import DEFAULT_DETECT_LONG_SIDE
    from preprocessing.faces import detect_faces
    from training.datasets import FrameDataset, dataset_config

    data, work = tmp_path / "data", tmp_path / "work"
    # 1280x720: step 0 detects on a downscaled copy (long side 960), so the scale rule matters
    portrait_clip(data / "a.mp4", size=(1280, 720), frames=16, fps=15, seed=4)
    write_metadata(data, {"a.mp4": {"label": "REAL", "original": None}})
    opts = make_opts(data, work)
    assert detect_faces(opts, frame_step=5).failed == 0
    assert extract_crops(opts).failed == 0
    w = WorkDir(work)
    boxes = FaceBoxes.load(w.boxes("a"))
    frames = sorted(int(k) for k, faces in boxes.frames.items() if len(faces))
    assert frames == [0, 5, 10, 15]

    extractor = FaceExtractor(num_frames=len(frames), margins=MARGINS, detect_every=1,
                              detect_long_side=DEFAULT_DETECT_LONG_SIDE, device="cpu")
    extractor.plan = _StepZeroFrames(frames)
    faces = extractor(data / "a.mp4")
    rows = [(f, k) for f in frames for k in range(len(boxes.frames[f]))]
    assert len(faces.crops[1 / 3]) == len(rows) == len(frames)  # one face per frame
    for crop, (f, k) in zip(faces.crops[1 / 3], rows):
        assert np.array_equal(crop, read_png(w.crop("a", f, k))), f"frame {f}: predictor crop != step 1 crop"

    # 6_predict's default: detected on the first and the last anchor (step 1's crops exactly),
    # the two between interpolated and refined onto step 0's faces
    from inference.predictor import DEFAULT_DETECT_EVERY, box_iou, detection_anchors

    default = FaceExtractor(num_frames=len(frames), margins=MARGINS, device="cpu")
    default.plan = _StepZeroFrames(frames)
    assert detection_anchors(frames, DEFAULT_DETECT_EVERY) == [0, 15]
    fast = default(data / "a.mp4")
    assert fast.frames_detected == 2 and len(fast.crops[1 / 3]) == len(frames)
    for crop, (f, k, box) in zip(fast.crops[1 / 3], fast.keys[1 / 3]):
        if f in (0, 15):
            assert np.array_equal(crop, read_png(w.crop("a", f, k))), f"frame {f}: predictor crop != step 1 crop"
        else:
            iou = box_iou(np.array([box]), np.asarray(boxes.frames[f][0][:4], np.float64)[None])[0, 0]
            assert iou > 0.8, (f, box, boxes.frames[f][0])

    # the models' inputs: the training dataset (validation mode) against the predictor's
    df = pd.DataFrame({"video": "a", "file": [str(w.crop("a", f, k).relative_to(work)) for f, k in rows],
                       "label": 0, "original": "", "frame": [f for f, _ in rows], "face": [k for _, k in rows],
                       "fold": 0})
    for margin, size, kw in ((1 / 3, 96, {}), (0.25, [96, 80], {"resize": "shortest", "augment": "ntech"})):
        cfg = dataset_config(size, **kw)
        cfg["margin"] = None if margin == 1 / 3 else margin  # None: the crops' own margin (selim's b7)
        cfg["network"] = "DeepFakeClassifier"
        ds = FrameDataset(work, df, fold=0, train=False, cfg=cfg)
        model = LoadedModel("m", torch.nn.Identity(), cfg)
        assert model.margin == pytest.approx(margin)
        for i, crop in enumerate(faces.crops[model.margin]):
            if margin != 1 / 3:  # the dataset re-cuts the 1/3 crop: equal to cropping the frame
                assert np.array_equal(ds._read_crop(i), crop), f"margin {margin}, item {i}"
            assert torch.equal(ds[i]["image"], model.augment([crop])[0]), f"margin {margin}, item {i}"
