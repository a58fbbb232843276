#!/usr/bin/env python
"""Decoding speed and memory by video length, and the fallback decoder against OpenCV.

    python bench/decode.py [--minutes 1 5 30] [--size 1280x720] [--fps 30] [--out-dir DIR]
    python bench/decode.py --videos A.mp4 B.webm ...   # your own files instead

For each length it generates a clip (ffmpeg's testsrc2, H.264, cached in --out-dir) and
times, for OpenCV and for PyAV (`FrameReader(decoder=...)`, the same code every step uses):

- `predict`: 6_predict's decode, 32 frames sampled evenly (every frame up to the last
  sampled one is decoded: no seeking);
- `step0`: step 0's decode, every 10th frame converted to RGB.

Peak RSS is measured in a fresh process per run (ru_maxrss after minus before): it must
not grow with the length. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RUN = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from inference.predictor import sample_indices
from preprocessing.video import FrameReader
path, decoder, mode = {path!r}, {decoder!r}, {mode!r}
FrameReader(path, decoder=decoder).select({{0}})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.time()
reader = FrameReader(path, decoder=decoder)
if mode == "predict":
    reader.select(set(sample_indices(reader.info.frame_count, 32)))
else:
    reader.wanted = lambda i: i % 10 == 0
kept = sum(1 for _ in reader)
print(json.dumps({{"seconds": time.time() - t0, "frames_decoded": reader.frames_decoded, "frames_kept": kept,
                  "decoder": reader.decoder,
                  "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}}))
"""


def make_clip(path: Path, minutes: float, size: str, fps: int) -> Path:
    from preprocessing.video import ffmpeg_exe

    if not path.exists():
        tmp = path.with_suffix(".tmp.mp4")
        subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                        f"testsrc2=size={size}:rate={fps}", "-t", str(minutes * 60), "-c:v", "libx264",
                        "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(tmp)], check=True)
        tmp.replace(path)
    return path


def measure(path: Path, decoder: str, mode: str) -> dict:
    code = RUN.format(repo=str(REPO), path=str(path), decoder=decoder, mode=mode)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    r["fps_decoded"] = r["frames_decoded"] / max(r["seconds"], 1e-9)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 30])
    p.add_argument("--size", default="1280x720")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--videos", type=Path, nargs="*", default=None, help="time these files instead")
    p.add_argument("--out-dir", type=Path, default=Path("/tmp/bench-decode"))
    p.add_argument("--modes", nargs="+", default=["predict", "step0"], choices=["predict", "step0"])
    a = p.parse_args()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if a.videos:
        clips = {v.name: v for v in a.videos}
    else:
        clips = {f"{m:g}min": make_clip(a.out_dir / f"testsrc_{m:g}min_{a.size}_{a.fps}.mp4", m, a.size, a.fps)
                 for m in a.minutes}
    results = {}
    for name, path in clips.items():
        results[name] = {mode: {dec: measure(path, dec, mode) for dec in ("opencv", "pyav")} for mode in a.modes}
        for mode in a.modes:
            r = results[name][mode]
            r["pyav_over_opencv"] = round(r["pyav"]["seconds"] / max(r["opencv"]["seconds"], 1e-9), 2)
        print(f"[decode] {name}: {json.dumps(results[name])}", file=sys.stderr)
    print(json.dumps({"size": a.size, "fps": a.fps, "videos": results, "seconds": round(time.time() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
