"""Reading a DFDC-shaped DATA_DIR: folders with a metadata.json each.

metadata.json maps a video file name to {"label": "REAL"|"FAKE", "original": name|null, ...};
an entry may also carry "mos": a finite number, the video's realism rating (mean opinion
score, as in DFGC-2023's labels: tools/import_mos_labels.py writes them), or null for none.
A video's id is its path relative to DATA_DIR without extension.
"""
from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

VIDEO_EXTENSIONS = {".mp4", ".mpg", ".mpeg", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
LABELS = {"REAL", "FAKE"}


class MetadataError(ValueError):
    """A metadata.json that is missing or cannot be used; the message names the file."""


@dataclass(frozen=True)
class Video:
    id: str                 # "dfdc_train_part_3/abcdefghij"
    path: Path              # absolute path of the video file
    label: str              # "REAL" | "FAKE"
    original: str | None    # id of the original for a FAKE (whether or not it exists on disk)
    original_present: bool  # the original is listed and its file exists
    mos: float | None = None  # realism rating (metadata "mos"), None when not rated
    method: str | None = None  # how a fake was made (metadata "method"), None when not given

    @property
    def is_fake(self) -> bool:
        return self.label == "FAKE"

    @property
    def detects_own_faces(self) -> bool:
        """Step 0 runs on originals, and on fakes whose original is missing."""
        return not self.is_fake or not self.original_present

    @property
    def group(self) -> str:
        """An original and all its fakes share a group (folds, sharding)."""
        return self.original if self.is_fake and self.original else self.id


@dataclass
class Dataset:
    videos: list[Video]
    errors: list[dict]      # folders/videos that could not be used, with the reason

    def by_id(self) -> dict[str, Video]:
        return {v.id: v for v in self.videos}


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def walk_files(root: Path) -> list[Path]:
    """Every file under `root`, sorted, following symlinked folders (a DATA_DIR may be a
    folder of links to other datasets: `run_all.sh DIR1 DIR2`), each real folder once;
    hidden files and folders are left out."""
    import os

    root = Path(root)
    out, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link cycle, or two links to one folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(Path(folder) / f for f in files if not f.startswith("."))
    return sorted(out)


def video_id(data_dir: Path, path: Path) -> str:
    return path.relative_to(data_dir).with_suffix("").as_posix()


def load_metadata(path: Path) -> dict[str, dict]:
    """Parse and validate one metadata.json; raise MetadataError naming the file."""
    if not path.is_file():
        raise MetadataError(f"{path}: metadata.json is missing (every folder of videos needs one)")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MetadataError(f"{path}: invalid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise MetadataError(f"{path}: expected an object mapping video names to entries")
    for name, entry in meta.items():
        if not isinstance(entry, dict):
            raise MetadataError(f"{path}: entry {name!r} is not an object")
        label = entry.get("label")
        if label not in LABELS:
            raise MetadataError(f"{path}: entry {name!r} has label {label!r}, expected REAL or FAKE")
        original = entry.get("original")
        if original is not None and not isinstance(original, str):
            raise MetadataError(f"{path}: entry {name!r} has a non-string original {original!r}")
        mos = entry.get("mos")
        if mos is not None and not is_mos(mos):
            raise MetadataError(f"{path}: entry {name!r} has mos {mos!r}, expected a finite number (or null for none)")
    return meta


def is_mos(value) -> bool:
    """A usable MOS: a finite int or float (a bool, a string, NaN or inf is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class MissingMosError(MetadataError):
    """Videos that need a MOS (see require_mos) lack one; the message names them."""


def require_mos(videos: Iterable[Video], needs: Callable[[Video], bool] = lambda v: v.is_fake,
                show: int = 5) -> dict[str, float]:
    """The MOS of every rated video ({id: mos}); raise MissingMosError naming the videos
    for which `needs` is true (by default the FAKEs: a MOS model is trained on every fake,
    while a REAL without one is simply not rated) but that have no MOS: the first `show`
    of them, their metadata.json files, and how many there are."""
    videos = list(videos)
    missing = [v for v in videos if v.mos is None and needs(v)]
    if missing:
        names = ", ".join(f"{v.id} ({v.path.parent / 'metadata.json'})" for v in missing[:show])
        more = f" and {len(missing) - show} more" if len(missing) > show else ""
        raise MissingMosError(
            f"{len(missing)} of {len(videos)} videos have no \"mos\" in their metadata.json entry: {names}{more}; "
            f"add the ratings (tools/import_mos_labels.py LABELS_CSV DATA_DIR)")
    return {v.id: v.mos for v in videos if v.mos is not None}


def load_dataset(data_dir: str | Path) -> Dataset:
    """List every labelled video under DATA_DIR.

    A folder holding videos but no usable metadata.json is reported in `errors` (with
    the file named) and skipped, so one bad folder does not stop the others.
    Raises FileNotFoundError if DATA_DIR does not exist.
    """
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"DATA_DIR {data_dir} does not exist or is not a folder")

    folders: dict[Path, list[Path]] = {}
    for path in walk_files(data_dir):
        if path.name == "metadata.json":
            folders.setdefault(path.parent, [])
        elif is_video_file(path):
            folders.setdefault(path.parent, []).append(path)

    videos: list[Video] = []
    errors: list[dict] = []
    for folder, files in sorted(folders.items()):
        meta_path = folder / "metadata.json"
        try:
            meta = load_metadata(meta_path)
        except MetadataError as e:
            for f in files:
                errors.append({"video": video_id(data_dir, f), "error": str(e)})
            if not files:
                errors.append({"video": None, "error": str(e)})
            continue
        on_disk = {f.name: f for f in files}
        for name in sorted(set(on_disk) - set(meta)):
            errors.append({"video": video_id(data_dir, on_disk[name]),
                           "error": f"not listed in {meta_path}; skipped"})
        for name, entry in sorted(meta.items()):
            path = folder / name
            if name not in on_disk:
                errors.append({"video": video_id(data_dir, path),
                               "error": f"listed in {meta_path} but the file is missing"})
                continue
            original = entry.get("original") if entry["label"] == "FAKE" else None
            original_path = folder / original if original else None
            videos.append(Video(
                id=video_id(data_dir, path),
                path=path,
                label=entry["label"],
                original=video_id(data_dir, original_path) if original_path else None,
                original_present=bool(original_path and original in on_disk and original in meta),
                mos=float(entry["mos"]) if entry.get("mos") is not None else None,
                method=entry.get("method"),
            ))
    return Dataset(videos=videos, errors=errors)


def shard(items: list, key, part: int, num_parts: int) -> list:
    """The items of shard `part` of `num_parts`, stable across machines and runs.

    Sharding hashes the group key, so an original and its fakes land on the same part.
    """
    if num_parts < 1 or not 0 <= part < num_parts:
        raise ValueError(f"--part must be in [0, {num_parts}), got {part}")
    if num_parts == 1:
        return list(items)
    return [it for it in items if zlib.crc32(key(it).encode()) % num_parts == part]
