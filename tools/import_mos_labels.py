#!/usr/bin/env python
"""Write realism ratings (MOS, mean opinion score) from a DFGC-style label CSV into the
metadata.json files of a DFDC-shaped DATA_DIR.

    python tools/import_mos_labels.py LABELS_CSV DATA_DIR [--label FAKE] [--dry-run]

LABELS_CSV has a header with (at least) the columns `file` and `mos`, one row a video,
`file` relative to DATA_DIR, as in DFGC-2023's labels:

    file,mos
    C1/1-1-3-submit-00000.mp4,4.4

For each row, the metadata.json of the video's folder gets (or updates) the entry of its
file name with "mos": a float, keeping the entry's other keys; a video not listed yet gets
{"label": --label (default FAKE: DFGC's rated videos are face swaps), "original": null}.
4_generate_folds.py then carries the ratings in a `mos` column of folds.csv.

A row whose mos is missing or not a finite number, whose file is not a video under
DATA_DIR, or a file listed twice with different ratings, is reported (with its line) and
skipped; the other rows are still written, and the exit code is 1. Every metadata.json is
written atomically, with sorted keys and an indent of 1; --dry-run writes nothing.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preprocessing.artifacts import atomic_write_text  # noqa: E402
from preprocessing.dataset import LABELS, VIDEO_EXTENSIONS  # noqa: E402

PREFIX = "[import_mos_labels]"


@dataclass(frozen=True)
class MosLabel:
    file: str   # relative to DATA_DIR, '/'-separated
    mos: float
    line: int   # the line of LABELS_CSV it came from (the header is line 1)
    source: str = ""  # LABELS_CSV

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}: {self.file}"


@dataclass
class ImportReport:
    rows: int = 0          # data rows read from the CSV
    updated: int = 0       # existing entries whose mos was set or changed
    added: int = 0         # entries created
    unchanged: int = 0     # existing entries that already had this mos
    written: list[Path] = field(default_factory=list)  # metadata.json files (to be) written
    errors: list[str] = field(default_factory=list)

    def summary(self, dry_run: bool = False) -> str:
        files = f"{len(self.written)} metadata.json {'to write' if dry_run else 'written'}"
        return (f"{PREFIX} {self.rows} rows read: {self.updated} entries updated, {self.added} added, "
                f"{self.unchanged} unchanged, {len(self.errors)} errors; {files}"
                + (" (dry run: nothing written)" if dry_run else ""))


def parse_mos(text: str | None) -> float:
    """A finite float from a CSV field; ValueError saying why not."""
    if text is None or not text.strip():
        raise ValueError("mos is missing")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"mos {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"mos {text.strip()!r} is not a finite number")
    return value


def _normalize(file: str) -> str | None:
    """`file` as a '/'-separated path inside DATA_DIR, or None if it is empty or leaves it."""
    path = PurePosixPath(file.strip().replace("\\", "/"))
    if not path.parts or path.is_absolute() or ".." in path.parts:
        return None
    return path.as_posix()


def read_labels(csv_path: str | Path) -> tuple[list[MosLabel], list[str], int]:
    """The usable rows of a label CSV (one per file), the errors of the others (each
    naming the CSV, its line and the file), and the number of data rows read.

    Extra columns are ignored. A file listed twice with the same mos is one label; with
    different ones, an error naming both lines, and neither is used.
    Raises ValueError when the CSV cannot be read or lacks a `file` or `mos` column.
    """
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
            missing = [c for c in ("file", "mos") if c not in columns]
            if missing:
                raise ValueError(f"{csv_path}: no column {' or '.join(map(repr, missing))} in the header "
                                 f"{reader.fieldnames!r} (expected a header 'file,mos')")
            by_file: dict[str, MosLabel] = {}
            conflicts: dict[str, list[MosLabel]] = {}
            errors, rows = [], 0
            for row in reader:
                rows += 1
                line = reader.line_num
                raw = row.get(columns["file"]) or ""
                file = _normalize(raw)
                if file is None:
                    errors.append(f"{csv_path}:{line}: file {raw!r} is not a path inside DATA_DIR; skipped")
                    continue
                try:
                    mos = parse_mos(row.get(columns["mos"]))
                except ValueError as e:
                    errors.append(f"{csv_path}:{line}: {file}: {e}; skipped")
                    continue
                label = MosLabel(file, mos, line, str(csv_path))
                if file in conflicts:
                    conflicts[file].append(label)
                elif file in by_file and by_file[file].mos != mos:
                    conflicts[file] = [by_file.pop(file), label]
                else:
                    by_file.setdefault(file, label)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{csv_path}: cannot read the label CSV ({e})") from e
    for file, labels in conflicts.items():
        seen = ", ".join(f"{x.mos:g} (line {x.line})" for x in labels)
        errors.append(f"{csv_path}: {file} is listed with different mos values: {seen}; skipped")
    return sorted(by_file.values(), key=lambda x: x.line), errors, rows


def apply_labels(labels: list[MosLabel], data_dir: str | Path, label: str = "FAKE",
                 dry_run: bool = False, report: ImportReport | None = None) -> ImportReport:
    """Write each label's mos into the metadata.json of its video's folder (see the
    module doc); a label whose video is not a file under DATA_DIR, or whose folder's
    metadata.json cannot be read, is an error in the report and skipped."""
    if label not in LABELS:
        raise ValueError(f"--label must be one of {sorted(LABELS)}, got {label!r}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"DATA_DIR {data_dir} does not exist or is not a folder")
    report = report if report is not None else ImportReport()
    by_folder: dict[Path, list[MosLabel]] = {}
    for x in labels:
        path = data_dir / x.file
        if not path.is_file():
            report.errors.append(f"{x.where}: no such file {path}; skipped")
        elif path.suffix.lower() not in VIDEO_EXTENSIONS:
            report.errors.append(f"{x.where}: not a video file (extensions "
                                 f"{' '.join(sorted(VIDEO_EXTENSIONS))}); skipped")
        else:
            by_folder.setdefault(path.parent, []).append(x)

    for folder, items in sorted(by_folder.items()):
        meta_path = folder / "metadata.json"
        try:
            meta = _read_metadata(meta_path)
        except ValueError as e:
            report.errors.extend(f"{x.where}: {e}; skipped" for x in items)
            continue
        changed = False
        for x in items:
            name = PurePosixPath(x.file).name
            entry = meta.get(name)
            if entry is None:
                meta[name] = {"label": label, "original": None, "mos": x.mos}
                report.added += 1
                changed = True
            elif not isinstance(entry, dict):
                report.errors.append(f"{x.where}: its entry in {meta_path} is not an object; skipped")
            elif type(entry.get("mos")) in (int, float) and entry["mos"] == x.mos:
                report.unchanged += 1
            else:
                entry["mos"] = x.mos
                report.updated += 1
                changed = True
        if changed:
            report.written.append(meta_path)
            if not dry_run:
                atomic_write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True))
    return report


def _read_metadata(path: Path) -> dict:
    """An existing metadata.json as a dict ({} when there is none); ValueError naming it."""
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not readable JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is not an object mapping video names to entries")
    return meta


def import_mos_labels(labels_csv: str | Path, data_dir: str | Path, label: str = "FAKE",
                      dry_run: bool = False) -> ImportReport:
    """read_labels + apply_labels: the report of rows read, entries updated/added, errors."""
    labels, errors, rows = read_labels(labels_csv)
    report = ImportReport(rows=rows, errors=errors)
    return apply_labels(labels, data_dir, label=label, dry_run=dry_run, report=report)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("labels_csv", type=Path, help="CSV with a header 'file,mos' (extra columns are ignored)")
    p.add_argument("data_dir", type=Path, help="the DFDC-shaped DATA_DIR the files are relative to")
    p.add_argument("--label", default="FAKE", choices=sorted(LABELS),
                   help="label of a video not listed in its metadata.json yet (default FAKE)")
    p.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    a = p.parse_args(argv)
    try:
        report = import_mos_labels(a.labels_csv, a.data_dir, label=a.label, dry_run=a.dry_run)
    except ValueError as e:
        print(f"{PREFIX} error: {e}", file=sys.stderr)
        return 2
    for e in report.errors:
        print(f"{PREFIX} error: {e}", file=sys.stderr)
    print(report.summary(a.dry_run))
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
