"""Step 3: an SSIM difference mask for each paired fake crop against its original's crop.

(1 - SSIM) * 255 as uint8 gray: bright where the fake differs (the swapped face),
dark elsewhere. Step 5 uses it to find the manipulated pixels (selim's masks).
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from .artifacts import CropManifest, WorkDir, atomic_dir, encode_png, parse_crop_name, read_png
from .crops import videos_with_crops
from .runner import StepOptions, StepResult, Task, run_tasks

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
    work = opts.work
    tasks = [Task(v.id, v.group, {"work_dir": str(work.root), "original": m.boxes_from})
             for v, m in videos_with_crops(opts)
             if v.is_fake and m.paired]  # unpaired fakes have no aligned original: no diff
    return run_tasks(STEP, tasks, _process, lambda t: work.diffs_dir(t.video).exists(), opts)
