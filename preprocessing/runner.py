"""What every numbered step shares: options, sharding, skipping finished work,
a worker pool, a tqdm bar, the errors file and the one-line summary.

A step is a list of `Task`s (one per video) and a function `process(task) -> dict`
of counters. A task whose output already exists is skipped unless --force. An
exception in one task is recorded in `{step}_errors.jsonl` and the step goes on.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import multiprocessing as mp
from tqdm import tqdm

from .artifacts import WorkDir, write_errors
from .dataset import shard
from .progress import progress_bar


class StepError(RuntimeError):
    """The step could do nothing at all (exit code 1), e.g. an empty or wrong DATA_DIR."""


class SkipVideo(Exception):
    """Not a failure: the video has nothing to do in this step (reason recorded as a note)."""


@dataclass
class StepOptions:
    data_dir: Path
    work_dir: Path
    workers: int = 1
    part: int = 0
    num_parts: int = 1
    limit: int | None = None
    force: bool = False
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        self.data_dir = Path(self.data_dir)
        self.work_dir = Path(self.work_dir)
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.num_parts < 1 or not 0 <= self.part < self.num_parts:
            raise ValueError(f"--part must be in [0, --num-parts={self.num_parts}), got {self.part}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"--limit must be >= 0, got {self.limit}")
        data = self.data_dir.resolve()
        work = self.work_dir.resolve()
        if work == data or data in work.parents:
            raise ValueError(f"WORK_DIR {work} must not be inside DATA_DIR {data} (DATA_DIR stays read-only)")

    @property
    def work(self) -> WorkDir:
        return WorkDir(self.work_dir)


@dataclass
class Task:
    video: str           # video id
    group: str           # sharding key: an original and its fakes share one
    payload: dict = field(default_factory=dict)


@dataclass
class StepResult:
    step: str
    total: int = 0       # tasks in this shard after --limit
    done: int = 0        # processed successfully in this run
    skipped: int = 0     # already finished (idempotent re-run)
    failed: int = 0
    noted: int = 0       # finished with a note (e.g. no face)
    seconds: float = 0.0
    counters: Counter = field(default_factory=Counter)
    errors_file: Path | None = None
    error_entries: list = field(default_factory=list)  # what the errors file holds now

    def absorb(self, other: "StepResult") -> None:
        """Add another pass of the same step (counts, counters, time) to this one."""
        for name in ("total", "done", "skipped", "failed", "noted", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.counters.update(other.counters)
        self.error_entries = other.error_entries  # the file as the later pass left it

    def summary(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.counters.items()))
        s = (f"[{self.step}] {self.total} videos: {self.done} done, {self.skipped} skipped (already done), "
             f"{self.failed} failed, {self.noted} with notes in {self.seconds:.1f}s")
        if extra:
            s += f" | {extra}"
        if self.failed or self.noted:
            s += f" | see {self.errors_file}"
        return s


# Worker-local state, built once per process by the step's `init` (e.g. the MTCNN model).
_WORKER_STATE: dict = {}


def worker_state() -> dict:
    return _WORKER_STATE


def _worker_init(init: Callable[[dict], None] | None, init_kwargs: dict, threads: int | None):
    if threads:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
        import cv2

        cv2.setNumThreads(threads)
    if init is not None:
        init(_WORKER_STATE, **init_kwargs)


def _call(process: Callable[[Task], dict], task: Task):
    t0 = time.time()
    try:
        counters = process(task) or {}
        return task.video, "ok", counters, None, time.time() - t0
    except SkipVideo as e:
        return task.video, "note", {}, str(e), time.time() - t0
    except Exception as e:  # one bad video never stops a step
        detail = f"{type(e).__name__}: {e}"
        if not isinstance(e, (IOError, ValueError, KeyError)):
            detail += "\n" + traceback.format_exc(limit=3)
        return task.video, "failed", {}, detail, time.time() - t0


def run_tasks(step: str, tasks: list[Task], process: Callable[[Task], dict],
              is_done: Callable[[Task], bool], opts: StepOptions,
              init: Callable[..., None] | None = None, init_kwargs: dict | None = None,
              preexisting_errors: list[dict] | None = None) -> StepResult:
    """Shard, limit, skip finished tasks, run the rest, record failures, summarise.

    `process(task)` returns counters (summed into the summary). It may return
    {"note": "..."} to finish the task with a recorded warning (e.g. "no face").
    """
    t_start = time.time()
    result = StepResult(step=step, errors_file=opts.work.errors(step, opts.part, opts.num_parts))
    mine = shard(tasks, key=lambda t: t.group, part=opts.part, num_parts=opts.num_parts)
    if opts.limit is not None:
        mine = mine[:opts.limit]
    result.total = len(mine)

    todo = []
    for t in mine:
        if not opts.force and is_done(t):
            result.skipped += 1
        else:
            todo.append(t)

    entries: list[dict] = []
    for e in preexisting_errors or []:
        entries.append({"step": step, **e})
    finished: set[str] = set()

    def record(video, status, counters, detail, seconds):
        result.counters.update({k: v for k, v in counters.items() if k != "note" and isinstance(v, (int, float))})
        note = counters.get("note") if isinstance(counters, dict) else None
        if status == "failed":
            result.failed += 1
            entries.append({"step": step, "video": video, "error": detail})
            tqdm.write(f"[{step}] FAILED {video}: {detail.splitlines()[0]}", file=sys.stderr)
        else:
            result.done += 1
            finished.add(video)
            if status == "note" or note:
                result.noted += 1
                entries.append({"step": step, "video": video, "note": detail or note})

    bar = progress_bar(total=len(todo), desc=step, unit="video", disable=not opts.progress or not todo)
    if opts.workers == 1 or len(todo) <= 1:
        _worker_init(init, init_kwargs or {}, None)
        for t in todo:
            record(*_call(process, t))
            bar.update(1)
    else:
        threads = max(1, (os.cpu_count() or 1) // opts.workers)
        ctx = mp.get_context("spawn")  # fork + torch/OpenMP threads can deadlock
        with ProcessPoolExecutor(opts.workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(init, init_kwargs or {}, threads)) as pool:
            futures = {pool.submit(_call, process, t): t for t in todo}
            for fut in as_completed(futures):
                try:
                    record(*fut.result())
                except Exception as e:  # a worker died (e.g. a decoder crash): keep the others' work
                    record(futures[fut].video, "failed", {}, f"worker process died: {type(e).__name__}: {e}", 0.0)
                bar.update(1)
    bar.close()

    result.error_entries = write_errors(result.errors_file, entries, finished)
    result.seconds = time.time() - t_start
    return result


# --------------------------------------------------------------------------- CLI
def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--data-dir", required=True, type=Path, help="DFDC-shaped dataset (read only)")
    parser.add_argument("--work-dir", required=True, type=Path, help="where artifacts are written")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--part", type=int, default=None,
                        help="this machine's shard, 0-based (default: from SLURM_ARRAY_TASK_ID in a SLURM array "
                             "job, else 0)")
    parser.add_argument("--num-parts", type=int, default=None,
                        help="number of shards (default: SLURM_ARRAY_TASK_COUNT in a SLURM array job, else 1)")
    parser.add_argument("--limit", type=int, default=None, help="process at most N videos (a quick try)")
    parser.add_argument("--force", action="store_true", help="redo videos whose outputs exist")
    parser.add_argument("--device", default=None, help="torch device for models (default: cuda if available)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def slurm_shard(env=None) -> tuple[int, int] | None:
    """(part, num_parts) of a SLURM array task, or None outside one. The array's indices
    need not start at 0 (`--array=1-8`): the part is the task id minus SLURM_ARRAY_TASK_MIN.
    A stepped or sparse array (`--array=0-15:2`, `1,5,9`) cannot be mapped onto contiguous
    shards and is refused."""
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" not in env:
        return None
    try:
        task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
        lo, hi = int(env.get("SLURM_ARRAY_TASK_MIN", 0)), int(env.get("SLURM_ARRAY_TASK_MAX", task))
    except (KeyError, ValueError) as e:
        raise ValueError(f"SLURM array variables are set but unusable ({e}); pass --part/--num-parts") from None
    if env.get("SLURM_ARRAY_TASK_MAX") is not None and hi - lo + 1 != count:
        raise ValueError(f"SLURM array {lo}-{hi} holds {count} tasks, not a contiguous range: use "
                         f"--array={lo}-{lo + count - 1}, or pass --part/--num-parts")
    return task - lo, count


def options_from_args(args: argparse.Namespace) -> StepOptions:
    part, num_parts = args.part, args.num_parts
    if part is None or num_parts is None:  # unset: a SLURM array task's shard, else the whole dataset
        slurm = slurm_shard()
        if slurm is not None and part is None and num_parts is None:
            part, num_parts = slurm
        elif part is None and num_parts is not None and num_parts > 1:
            raise ValueError(f"--num-parts {num_parts} needs --part")
        part = 0 if part is None else part
        num_parts = 1 if num_parts is None else num_parts
    return StepOptions(data_dir=args.data_dir, work_dir=args.work_dir, workers=args.workers,
                       part=part, num_parts=num_parts, limit=args.limit, force=args.force,
                       device=args.device, progress=not args.no_progress)


def cli_main(step_fn: Callable[..., StepResult], parser: argparse.ArgumentParser, **fixed) -> int:
    """Parse, run one step function, print its summary; exit 1 only if it could do nothing."""
    args = parser.parse_args()
    try:
        opts = options_from_args(args)
        extra = {k: v for k, v in vars(args).items() if k not in {
            "data_dir", "work_dir", "workers", "part", "num_parts", "limit", "force", "device", "no_progress"}}
        result = step_fn(opts, **extra, **fixed)
    except (StepError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(result.summary())
    if result.total > 0 and result.failed == result.total:
        print(f"error: every video failed in {result.step}; see {result.errors_file}", file=sys.stderr)
        return 1
    return 0
