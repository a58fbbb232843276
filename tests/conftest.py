import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEV_VIDEOS = REPO.parent / "shared" / "data" / "dev-videos"


@pytest.fixture(scope="session")
def detector():
    from preprocessing.detection import FaceDetector

    return FaceDetector(device="cpu")


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """A small generated DFDC-shaped dataset: 2 folders x (2 REAL + 2 FAKE + 1 orphan FAKE)."""
    from preprocessing.sample_data import generate_sample_dataset

    out = tmp_path_factory.mktemp("sample")
    index = generate_sample_dataset(out, folders=2, reals=2, fakes=1, seconds=1.4, fps=15,
                                    size=(256, 192), seed=3, orphan_fakes=1)
    (out / "_index.json").write_text(json.dumps(index))
    return out


def make_opts(data_dir, work_dir, **kw):
    from preprocessing.runner import StepOptions

    kw.setdefault("progress", False)
    return StepOptions(data_dir=data_dir, work_dir=work_dir, **kw)


def run_steps_0_to_4(data_dir, work_dir, folds=2, **kw):
    from preprocessing.crops import extract_crops
    from preprocessing.diffs import generate_diffs
    from preprocessing.faces import detect_faces
    from preprocessing.folds import generate_folds
    from preprocessing.landmarks import generate_landmarks

    opts = make_opts(data_dir, work_dir, **kw)
    return {
        "0": detect_faces(opts),
        "1": extract_crops(opts),
        "2": generate_landmarks(opts),
        "3": generate_diffs(opts),
        "4": generate_folds(opts, folds=folds),
    }


@pytest.fixture(scope="session")
def sample_work(sample_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    results = run_steps_0_to_4(sample_dir, work)
    return work, results


def read_errors(path):
    if not Path(path).exists():
        return []
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]


def write_metadata(folder, entries):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.json").write_text(json.dumps(entries))


def copy_video(src, dst):
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)


def rng():
    return np.random.default_rng(0)
