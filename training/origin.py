"""Was a checkpoint trained from this work dir? run_all.sh asks before it reuses a finished
fold (`_best.pt`) or resumes one (`_last.pt`): a checkpoint left in WEIGHTS_DIR by a run on
another dataset (the built-in sample, say) must not stand in for this one's; run_all moves
it aside and trains the fold again.

    python -m training.origin CHECKPOINT WORK_DIR
    python -m training.origin --unfinished LAST_CHECKPOINT

Exit 0 when the checkpoint's recorded work dir is WORK_DIR (or it records none: saved
before checkpoints did, reused with a warning); 1, with a message naming both, when it is
another, or when the file is not a readable checkpoint. `--unfinished`: exit 0 when a
`_last.pt` records a run stopped before its final epoch (killed), which run_all then
resumes even though its `_best.pt` exists; 1 when it finished, says nothing (saved before
checkpoints recorded it) or cannot be read.
"""
import sys
from pathlib import Path


def origin_error(ckpt: dict, path: str | Path, work_dir: str | Path) -> str | None:
    """None when `ckpt` was trained from `work_dir` (or does not say), else why not."""
    recorded = ckpt.get("work_dir")
    if recorded is None or Path(recorded).resolve() == Path(work_dir).resolve():
        return None
    return f"{path} was trained from {recorded}, not from this run's WORK_DIR {Path(work_dir).resolve()}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from .engine import load_checkpoint

    if len(argv) == 2 and argv[0] == "--unfinished":
        try:
            return 0 if load_checkpoint(argv[1]).get("finished") is False else 1
        except Exception as e:  # noqa: BLE001 -- unreadable: run_all's origin check moves it aside
            print(f"{argv[1]}: {e}", file=sys.stderr)
            return 1
    if len(argv) != 2:
        print("usage: python -m training.origin CHECKPOINT WORK_DIR | --unfinished LAST_CHECKPOINT",
              file=sys.stderr)
        return 2

    path, work_dir = argv
    try:
        ckpt = load_checkpoint(path)
    except Exception as e:  # noqa: BLE001 -- missing, truncated, not a checkpoint: not reusable
        print(f"{path}: {e}", file=sys.stderr)
        return 1
    error = origin_error(ckpt, path, work_dir)
    if error:
        print(error, file=sys.stderr)
        return 1
    if ckpt.get("work_dir") is None:
        print(f"warning: {path} records no work dir (saved before checkpoints did); reused as it is", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
