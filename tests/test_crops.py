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
