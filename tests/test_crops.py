from types import SimpleNamespace

import pytest

from preprocessing.artifacts import FaceBoxes, WorkDir
from preprocessing.crops import crop_box, crop_plan, plan_boxes_source


def test_crop_box_margin_is_a_third_of_the_side():
    assert crop_box([30, 60, 60, 120], 1000, 1000) == (20, 40, 70, 140)
    assert crop_box([30, 60, 60, 120], 1000, 1000, margin=0) == (30, 60, 60, 120)


def test_crop_box_is_clipped_to_the_frame():
    assert crop_box([-5, 2, 50, 40], 55, 45) == (0, 0, 55, 45)


def test_crop_plan_skips_degenerate_boxes():
    boxes = FaceBoxes(100, 100, 25.0, 30, {0: [[10, 10, 40, 40, 0.99], [99, 99, 100, 100, 0.95]], 10: []})
    plan = crop_plan(boxes, margin=0)
    assert plan == {0: [(0, (10, 10, 40, 40))]}


def _video(id, label, original=None, present=False):
    return SimpleNamespace(id=id, label=label, is_fake=label == "FAKE", original=original,
                           original_present=present)


def test_boxes_source(tmp_path):
    work = WorkDir(tmp_path)
    work.boxes("p/real").parent.mkdir(parents=True)
    work.boxes("p/real").write_text("{}")
    assert plan_boxes_source(_video("p/real", "REAL"), work) == ("p/real", False, None)
    assert plan_boxes_source(_video("p/fake", "FAKE", "p/real", True), work) == ("p/real", True, None)
    src, paired, why = plan_boxes_source(_video("p/orphan", "FAKE", "p/gone", False), work)
    assert (src, paired) == ("p/orphan", False) and "p/gone is missing" in why
    src, paired, why = plan_boxes_source(_video("p/f2", "FAKE", "p/broken", True), work)
    assert (src, paired) == ("p/f2", False) and "failed in step 0" in why


def _clip_crops(tmp_path, seed, frame_boxes, clip_len):
    """Step 1's crops of a random 25-frame 80x64 clip with the given boxes:
    (out dir, anchor crop names, clip crop names, counters)."""
    import numpy as np

    from preprocessing.crops import extract_video_crops
    from preprocessing.video import encode_video

    frames = np.random.default_rng(seed).integers(0, 255, (25, 64, 80, 3), dtype=np.uint8)
    encode_video(tmp_path / "v.mp4", frames, 15)
    out = tmp_path / "out"
    out.mkdir()
    anchors, clips, counters = extract_video_crops(tmp_path / "v.mp4", FaceBoxes(80, 64, 15.0, 25, frame_boxes), out,
                                                   margin=0, clip_len=clip_len)
    return out, anchors, clips, counters


def test_clip_crops_follow_each_detected_frame_with_its_box(tmp_path):
    from preprocessing.artifacts import read_png

    out, anchors, clips, counters = _clip_crops(tmp_path, 0, {0: [[10, 10, 40, 40, 0.99]], 10: [[20, 12, 50, 42, 0.99]],
                                                              20: [[20, 12, 50, 42, 0.99]]}, clip_len=4)
    assert anchors == ["0_0.png", "10_0.png", "20_0.png"]
    assert sorted(clips) == sorted(f"{a}_0_t{j}.png" for a in (0, 10, 20) for j in (1, 2, 3))
    assert read_png(out / "0_0_t2.png").shape == read_png(out / "0_0.png").shape == (30, 30, 3)
    assert read_png(out / "10_0_t2.png").shape == (30, 30, 3)
    assert counters["clip_crops"] == 9


def test_clips_longer_than_the_frame_step_keep_their_own_box(tmp_path):
    """A 13-frame clip (NTech: 7 frames at 1/15 s) after anchor 0 covers anchor 10: its
    frames 10-12 are cut with anchor 0's box, and anchor 10's own crop keeps its box."""
    import numpy as np

    from preprocessing.artifacts import read_png

    out, anchors, clips, _ = _clip_crops(tmp_path, 1, {0: [[10, 10, 40, 40, 0.99]], 10: [[20, 12, 60, 52, 0.99]]},
                                         clip_len=13)
    assert anchors == ["0_0.png", "10_0.png"] and len(clips) == 2 * 12
    assert read_png(out / "0_0_t10.png").shape == (30, 30, 3)   # frame 10, anchor 0's box
    assert read_png(out / "10_0.png").shape == (40, 40, 3)      # frame 10, its own box
    assert not np.array_equal(read_png(out / "0_0_t10.png"), read_png(out / "10_0.png")[:30, :30])


def test_a_clip_past_the_end_repeats_its_last_frame(tmp_path):
    """Anchor 20 of a 25-frame video with 8-frame clips: frames 25-27 do not exist, so
    t5..t7 repeat frame 24 (t4), as 6_predict pads its clips; every anchor has a whole clip."""
    import numpy as np

    from preprocessing.artifacts import read_png

    out, anchors, clips, counters = _clip_crops(tmp_path, 2, {10: [[10, 10, 40, 40, 0.99]],
                                                              20: [[20, 12, 50, 42, 0.99]]}, clip_len=8)
    assert sorted(clips) == sorted(f"{a}_0_t{j}.png" for a in (10, 20) for j in range(1, 8))
    assert counters["clip_crops_padded"] == 3
    last = read_png(out / "20_0_t4.png")
    assert all(np.array_equal(read_png(out / f"20_0_t{j}.png"), last) for j in (5, 6, 7))
    assert not np.array_equal(read_png(out / "20_0_t3.png"), last)


def test_recrop_equals_cropping_the_frame_with_the_smaller_margin():
    import numpy as np

    from preprocessing.crops import recrop

    frame = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    for box in ([30, 20, 70, 75], [2, 1, 40, 50], [90, 40, 119, 89]):  # inside, at two corners
        x1, y1, x2, y2 = crop_box(box, 120, 90, 1 / 3)
        big = frame[y1:y2, x1:x2]
        for margin in (0.25, 0.1, 0.0, 1 / 3):
            a1, b1, a2, b2 = crop_box(box, 120, 90, margin)
            assert np.array_equal(recrop(big, box, 120, 90, 1 / 3, margin), frame[b1:b2, a1:a2])
    with pytest.raises(ValueError, match="cannot widen"):
        recrop(big, box, 120, 90, 1 / 3, 0.5)
