"""Step 1: crop every face of every video, a FAKE with its ORIGINAL's boxes.

Cropping a fake with its original's boxes (selim, 1st place) makes the two crops
pixel-aligned: same frame, same rectangle, so the only difference is the swap.
"""
from __future__ import annotations

import numpy as np

from .artifacts import CropManifest, FaceBoxes, WorkDir, atomic_dir, clip_crop_name, crop_name, encode_png
from .dataset import Dataset, load_dataset
from .runner import SkipVideo, StepError, StepOptions, StepResult, Task, run_tasks
from .video import FrameReader, add_note, decoder_counters

STEP = "1_extract_crops"
DEFAULT_MARGIN = 1 / 3  # selim: a third of the box side on every side


def crop_box(box, width: int, height: int, margin: float = DEFAULT_MARGIN) -> tuple[int, int, int, int]:
    """Integer crop rectangle (x1, y1, x2, y2) of a face box grown by `margin` of its
    side on every side, clipped to the frame. Pure function of the box: a fake and its
    original get the same rectangle from the same box."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    w, h = x2 - x1, y2 - y1
    px, py = w * margin, h * margin
    cx1 = int(max(0, np.floor(x1 - px)))
    cy1 = int(max(0, np.floor(y1 - py)))
    cx2 = int(min(width, np.ceil(x2 + px)))
    cy2 = int(min(height, np.ceil(y2 + py)))
    return cx1, cy1, cx2, cy2


def recrop(crop: np.ndarray, box, width: int, height: int, crop_margin: float, margin: float) -> np.ndarray:
    """The crop with `margin` cut out of a crop made with `crop_margin` >= margin from the
    same box: exactly what `crop_box(box, width, height, margin)` would cut from the frame
    (the smaller rectangle, clipped to the frame, lies inside the larger one). Lets one set
    of step-1 crops (selim's 1/3) serve a model trained on tighter crops (NTech's 1.5x box)."""
    if margin > crop_margin + 1e-9:
        raise ValueError(f"cannot widen a crop: margin {margin} > the crop's {crop_margin} "
                         f"(re-run 1_extract_crops.py with --margin {margin})")
    ox1, oy1, ox2, oy2 = crop_box(box, width, height, crop_margin)
    if crop.shape[:2] != (oy2 - oy1, ox2 - ox1):
        raise ValueError(f"crop of {crop.shape[1]}x{crop.shape[0]} does not match its box's rectangle "
                         f"{ox2 - ox1}x{oy2 - oy1} at margin {crop_margin}")
    if abs(margin - crop_margin) < 1e-9:
        return crop
    x1, y1, x2, y2 = crop_box(box, width, height, margin)
    return crop[y1 - oy1:y2 - oy1, x1 - ox1:x2 - ox1]


def crop_plan(boxes: FaceBoxes, margin: float, min_size: int = 8) -> dict[int, list[tuple[int, tuple]]]:
    """frame -> [(face index, rectangle)] for every usable box."""
    plan: dict[int, list[tuple[int, tuple]]] = {}
    for frame, faces in sorted(boxes.frames.items()):
        for face, box in enumerate(faces):
            rect = crop_box(box, boxes.width, boxes.height, margin)
            if rect[2] - rect[0] >= min_size and rect[3] - rect[1] >= min_size:
                plan.setdefault(frame, []).append((face, rect))
    return plan


def extract_video_crops(path, boxes: FaceBoxes, out_dir, margin: float = DEFAULT_MARGIN,
                        clip_len: int = 1) -> tuple[list[str], list[str], dict]:
    """Decode the planned frames of one video once and write its crops into out_dir.

    With clip_len > 1, each detected frame f also gets the crops of frames f+1 ..
    f+clip_len-1 cut with f's rectangle, named `{f}_{face}_t{j}.png` (NTech's sequence
    model and the whole-clip re-encoding need consecutive frames; a face moves little in
    half a second, and the margin absorbs it). A clip may overlap the next detected frame:
    it is cropped with its own anchor's box all the same. A clip that runs past the last
    decodable frame repeats it (as 6_predict's clips do), so every anchor has a whole clip.
    Returns (anchor crop names, clip crop names, counters).
    """
    plan = crop_plan(boxes, margin)
    wanted: dict[int, list[tuple[int, int]]] = {}  # frame -> [(anchor, offset)]
    for f in plan:
        for j in range(clip_len):
            wanted.setdefault(f + j, []).append((f, j))
    reader = FrameReader(path).select(set(wanted))
    anchors, clips = [], []
    # (anchor, face) -> the latest (offset, PNG) of a clip still open: only that one is kept
    last: dict[tuple[int, int], tuple[int, bytes]] = {}
    padded = 0

    def repeat_last(anchor: int, face: int, until: int) -> None:
        """Write the clip's offsets after its latest one, up to `until` (excluded), as copies
        of it: frames that could not be decoded, or past the end (as 6_predict's clips)."""
        nonlocal padded
        offset, data = last[(anchor, face)]
        for j in range(offset + 1, until):
            name = clip_crop_name(anchor, face, j)
            (out_dir / name).write_bytes(data)
            clips.append(name)
            padded += 1

    # frames stream in order, one at a time (memory does not grow with the video's length);
    # a frame that is never decoded (a fake shorter than its original, past the end) is skipped
    for frame_idx, frame in reader:
        if frame.shape[:2] != (boxes.height, boxes.width):
            raise ValueError(f"frame size {frame.shape[1]}x{frame.shape[0]} differs from the boxes' "
                             f"{boxes.width}x{boxes.height} (a fake must match its original)")
        for anchor, offset in wanted[frame_idx]:
            for face, (x1, y1, x2, y2) in plan[anchor]:
                key = (anchor, face)
                if offset > 0 and key in last:
                    repeat_last(anchor, face, offset)  # a gap inside the clip
                name = crop_name(anchor, face) if offset == 0 else clip_crop_name(anchor, face, offset)
                data = encode_png(frame[y1:y2, x1:x2])
                (out_dir / name).write_bytes(data)
                (anchors if offset == 0 else clips).append(name)
                if offset == 0 or key in last:  # a clip is padded only when its anchor was decoded
                    last[key] = (offset, data)
                if offset == clip_len - 1:
                    last.pop(key, None)  # complete
    for anchor, face in last:  # clips past the end
        repeat_last(anchor, face, clip_len)
    return anchors, clips, {"frames_decoded": reader.frames_decoded, "crops": len(anchors),
                            "clip_crops": len(clips), "clip_crops_padded": padded, **decoder_counters(reader)}


def _process(task: Task) -> dict:
    p = task.payload
    work = WorkDir(p["work_dir"])
    boxes_path = work.boxes(p["boxes_from"])
    if not boxes_path.exists():
        raise FileNotFoundError(f"no boxes for {p['boxes_from']} (step 0 failed or was not run)")
    boxes = FaceBoxes.load(boxes_path)
    if boxes.num_faces == 0:
        raise SkipVideo(f"no face in {p['boxes_from']}'s boxes: nothing to crop")
    with atomic_dir(work.crops_dir(task.video)) as tmp:
        names, clips, counters = extract_video_crops(p["path"], boxes, tmp, p["margin"], p["clip_len"])
        if not names:
            raise ValueError("no crop could be written (no planned frame could be decoded)")
        CropManifest(video=task.video, label=p["label"], boxes_from=p["boxes_from"], paired=p["paired"],
                     crops=names, margin=p["margin"], reason=p["reason"], clip_len=p["clip_len"],
                     clip_crops=clips).save(tmp / "crops.json")
    counters["unpaired"] = int(p["label"] == "FAKE" and not p["paired"])
    return add_note(counters, p["reason"])


def plan_boxes_source(video, work: WorkDir) -> tuple[str, bool, str | None]:
    """(boxes_from, paired, reason): where a video's crop boxes come from."""
    if not video.is_fake:
        return video.id, False, None
    if video.original_present and work.boxes(video.original).exists():
        return video.original, True, None
    if not video.original:
        why = "FAKE without an original in metadata"
    elif not video.original_present:
        why = f"original {video.original} is missing from DATA_DIR"
    else:
        why = f"original {video.original} has no boxes (it failed in step 0)"
    return video.id, False, f"unpaired: {why}; cropped with its own boxes"


def extract_crops(opts: StepOptions, margin: float = DEFAULT_MARGIN, clip_len: int = 1,
                  dataset: Dataset | None = None) -> StepResult:
    if not 0 <= margin <= 2:
        raise ValueError(f"--margin must be in [0, 2] (a fraction of the box side), got {margin}")
    if clip_len < 1:
        raise ValueError(f"--clip-len must be >= 1, got {clip_len}")
    dataset = dataset or load_dataset(opts.data_dir)
    if not dataset.videos:
        raise StepError(f"no usable videos under {opts.data_dir}")
    work = opts.work
    if not (work.root / "boxes").is_dir():
        raise StepError(f"no boxes under {work.root / 'boxes'}: run 0_detect_faces.py first")
    tasks = []
    for v in dataset.videos:
        boxes_from, paired, reason = plan_boxes_source(v, work)
        tasks.append(Task(v.id, v.group, {
            "path": str(v.path), "work_dir": str(work.root), "label": v.label,
            "boxes_from": boxes_from, "paired": paired, "reason": reason, "margin": margin,
            "clip_len": clip_len}))
    return run_tasks(STEP, tasks, _process, lambda t: work.crop_manifest(t.video).exists(), opts)


def videos_with_crops(opts: StepOptions) -> list[tuple]:
    """(Video, CropManifest) for every video step 1 finished: what steps 2-4 read."""
    work = opts.work
    if not (work.root / "crops").is_dir():
        raise StepError(f"no crops under {work.root / 'crops'}: run 1_extract_crops.py first")
    out = []
    for v in load_dataset(opts.data_dir).videos:
        path = work.crop_manifest(v.id)
        if path.exists():  # otherwise step 1 failed or found no face, recorded there
            out.append((v, CropManifest.load(path)))
    return out
