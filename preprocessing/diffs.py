"""Step 3: an SSIM difference mask for each paired fake crop against its original's crop.

(1 - SSIM) * 255 as uint8 gray: bright where the fake differs (the swapped face),
dark elsewhere. Step 5 uses it to find the manipulated pixels (selim's masks).
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from .artifacts import CropManifest, WorkDir, atomic_dir, encode_png, parse_crop_name, read_png
from .dataset import load_dataset
from .runner import StepError, StepOptions, StepResult, Task, run_tasks

STEP = "3_generate_diffs"


def ssim_diff(original: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """uint8 (H, W) map of (1 - SSIM) * 255 between two aligned RGB crops."""
    if original.shape != fake.shape:
        raise ValueError(f"crops are not aligned: original {original.shape} vs fake {fake.shape}")
    _, ssim_map = structural_similarity(original, fake, channel_axis=2, data_range=255, full=True)
    diff = (1.0 - ssim_map.mean(axis=2)) * 255.0
    return np.clip(diff, 0, 255).astype(np.uint8)


def _process(task: Task) -> dict:
    work = WorkDir(task.payload["work_dir"])
    fake_id, original_id = task.video, task.payload["original"]
    manifest = CropManifest.load(work.crop_manifest(fake_id))
    written = missing = 0
    with atomic_dir(work.diffs_dir(fake_id)) as tmp:
        for name in manifest.crops:
            original_crop = work.crops_dir(original_id) / name
            if not original_crop.exists():
                missing += 1  # the original's frame could not be decoded
                continue
            diff = ssim_diff(read_png(original_crop), read_png(work.crops_dir(fake_id) / name))
            frame, face = parse_crop_name(name)
            (tmp / f"{frame}_{face}_diff.png").write_bytes(encode_png(diff))
            written += 1
    if written == 0:
        raise FileNotFoundError(f"none of {fake_id}'s crops has a counterpart in crops/{original_id}")
    return {"diffs": written, "crops_without_original": missing}


def generate_diffs(opts: StepOptions) -> StepResult:
    dataset = load_dataset(opts.data_dir)
    work = opts.work
    if not (work.root / "crops").is_dir():
        raise StepError(f"no crops under {work.root / 'crops'}: run 1_extract_crops.py first")
    tasks = []
    for v in dataset.videos:
        manifest_path = work.crop_manifest(v.id)
        if not v.is_fake or not manifest_path.exists():
            continue
        manifest = CropManifest.load(manifest_path)
        if manifest.paired:  # unpaired fakes have no aligned original: no diff
            tasks.append(Task(v.id, v.group, {"work_dir": str(work.root), "original": manifest.boxes_from}))
    return run_tasks(STEP, tasks, _process, lambda t: work.diffs_dir(t.video).exists(), opts)
