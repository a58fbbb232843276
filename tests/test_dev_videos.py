"""Steps 0-4 on the real public clips in ../shared/data/dev-videos (skipped when absent)."""
import pandas as pd
import pytest

from preprocessing.artifacts import CropManifest, FaceBoxes, WorkDir
from preprocessing.dataset import load_dataset
from conftest import DEV_VIDEOS, read_errors, run_steps_0_to_4

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (DEV_VIDEOS / "ffpp_c23" / "metadata.json").exists(),
                                 reason="../shared/data/dev-videos is not present")]


@pytest.fixture(scope="module")
def dev_work(tmp_path_factory):
    work = tmp_path_factory.mktemp("dev")
    return work, run_steps_0_to_4(DEV_VIDEOS, work, folds=3, workers=2)


def test_faces_found_in_every_video(dev_work):
    work, results = dev_work
    w = WorkDir(work)
    ds = load_dataset(DEV_VIDEOS)
    assert len(ds.videos) == 28 and ds.errors == []
    for step, r in results.items():
        assert r.failed == 0, (step, read_errors(r.errors_file))
    for v in ds.videos:  # every clip here shows a face
        if v.detects_own_faces:
            boxes = FaceBoxes.load(w.boxes(v.id))
            with_face = sum(bool(b) for b in boxes.frames.values())
            assert with_face >= 0.9 * len(boxes.frames), (v.id, with_face, len(boxes.frames))
        assert CropManifest.load(w.crop_manifest(v.id)).crops, v.id


def test_pairs_orphans_and_folds(dev_work):
    work, _ = dev_work
    w = WorkDir(work)
    for fake, original in [("004_982", "004"), ("519_515", "519"), ("634_660", "634")]:
        m = CropManifest.load(w.crop_manifest(f"ffpp_c23/{fake}"))
        assert m.paired and m.boxes_from == f"ffpp_c23/{original}"
        assert len(list(w.diffs_dir(f"ffpp_c23/{fake}").glob("*_diff.png"))) == len(m.crops)
    for orphan in ["ffpp_c23/750_743", "dfdc_sample/brtujopkby"]:
        assert not CropManifest.load(w.crop_manifest(orphan)).paired
    portrait = FaceBoxes.load(w.boxes("dfdc_sample/brtujopkby"))  # a 1080x1920 clip
    assert (portrait.width, portrait.height) == (1080, 1920)
    df = pd.read_csv(w.folds, keep_default_na=False)
    assert set(df.fold) == {0, 1, 2} and df.video.nunique() == 28
    for _, g in df[df.original != ""].groupby("original"):
        assert g.fold.nunique() == 1
