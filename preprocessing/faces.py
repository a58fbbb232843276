"""Step 0: detect faces on the frames later steps use, for originals and orphan fakes."""
from __future__ import annotations

from .artifacts import FaceBoxes
from .dataset import Dataset, load_dataset
from .detection import DEFAULT_DETECT_LONG_SIDE, FaceDetector, detection_scale, min_face_size
from .runner import StepError, StepOptions, StepResult, Task, run_tasks, worker_state
from .video import FrameReader, add_note, decoder_counters, prefetch

STEP = "0_detect_faces"
DEFAULT_FRAME_STEP = 10


def sampled_frame(idx: int, frame_step: int) -> bool:
    """The frames steps 0 and 1 use: every `frame_step`-th, starting at 0."""
    return idx % frame_step == 0


def detect_video(detector: FaceDetector, path, frame_step: int = DEFAULT_FRAME_STEP,
                 long_side: int = DEFAULT_DETECT_LONG_SIDE, batch_size: int = 16) -> tuple[FaceBoxes, dict]:
    """Decode a video once and detect faces on every `frame_step`-th frame, in batches.

    Returns the boxes (full-resolution pixels) and counters for the summary/benchmark.
    """
    reader = FrameReader(path, wanted=lambda i: sampled_frame(i, frame_step))
    info = reader.info
    scale = min_face = None
    frames: dict[int, list[list[float]]] = {}
    batch_idx, batch = [], []
    detected = 0

    def flush():
        nonlocal detected
        for idx, det in zip(batch_idx, detector.detect(batch, scale, min_face)):
            frames[idx] = [[*map(float, b), float(p)] for b, p in zip(det.boxes, det.probs)]
        detected += len(batch)
        batch_idx.clear()
        batch.clear()

    for idx, frame in prefetch(reader, size=2 * batch_size):
        if scale is None:
            # The decoded size is the truth (rotation metadata is applied by the decoder).
            info.height, info.width = frame.shape[:2]
            scale = detection_scale(info.width, info.height, long_side)
            min_face = min_face_size(info.width, info.height, scale)
        batch_idx.append(idx)
        batch.append(frame)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    boxes = FaceBoxes(width=info.width, height=info.height, fps=info.fps,
                      num_frames=reader.num_frames, frames=frames)
    return boxes, {"frames_decoded": reader.frames_decoded, "frames_detected": detected,
                   "faces": boxes.num_faces, **decoder_counters(reader)}


def _init(state: dict, device: str | None, min_prob: float):
    state["detector"] = FaceDetector(device=device, min_prob=min_prob)


def _process(task: Task) -> dict:
    p = task.payload
    boxes, counters = detect_video(worker_state()["detector"], p["path"], p["frame_step"], p["long_side"])
    boxes.save(p["out"])
    if boxes.num_faces == 0:
        add_note(counters, f"no face found on {len(boxes.frames)} sampled frames "
                           f"({boxes.width}x{boxes.height}, {boxes.num_frames} frames)")
        counters["no_face"] = 1
    return counters


def detect_faces(opts: StepOptions, frame_step: int = DEFAULT_FRAME_STEP,
                 detect_long_side: int = DEFAULT_DETECT_LONG_SIDE, min_prob: float = 0.9,
                 dataset: Dataset | None = None) -> StepResult:
    """Write boxes/{id}.json for every original and every fake whose original is missing.

    Fakes whose original is present but failed here are detected in a second pass, so
    that no video is wasted: step 1 then crops them from their own boxes, unpaired.
    """
    if frame_step < 1:
        raise ValueError(f"--frame-step must be >= 1, got {frame_step}")
    dataset = dataset or load_dataset(opts.data_dir)
    if not dataset.videos:
        raise StepError(f"no usable videos under {opts.data_dir}: "
                        + ("; ".join(sorted({e['error'] for e in dataset.errors})) or "no video files"))
    work = opts.work

    def task(v) -> Task:
        return Task(v.id, v.group, {"path": str(v.path), "out": str(work.boxes(v.id)),
                                    "frame_step": frame_step, "long_side": detect_long_side})

    def is_done(t: Task) -> bool:
        return work.boxes(t.video).exists()

    init_kwargs = {"device": opts.device, "min_prob": min_prob}
    first = [task(v) for v in dataset.videos if v.detects_own_faces]
    result = run_tasks(STEP, first, _process, is_done, opts, init=_init, init_kwargs=init_kwargs,
                       preexisting_errors=dataset.errors)

    # Fakes whose original is listed but failed here (unreadable original).
    failed = {e["video"] for e in result.error_entries if "error" in e and e.get("step") == STEP}
    second = [task(v) for v in dataset.videos
              if not v.detects_own_faces and v.original in failed and not work.boxes(v.original).exists()]
    if second:
        # Same shard as their original, so only fakes of originals this part handled.
        result.absorb(run_tasks(STEP, second, _process, is_done, opts, init=_init, init_kwargs=init_kwargs))
    return result
