#!/usr/bin/env python
"""Audio-visual dissonance (Chugh et al., MDS): train `mds_cpu` (or --config mds_sync_cpu), score sound it never heard.

    python bench/dissonance.py [--config configs/mds_cpu.json] [--out /tmp/bench_av]
                       [--train-videos ../shared/data/train-videos] [--dev-videos ../shared/data/dev-videos]

Training set (REAL videos with sound only; every FAKE the model sees is a REAL segment
given the wrong sound, `data.av_fake_prob`): the generated sample with `--audio
--av-fakes` (mouths driven by a synthetic voice), the REAL talking heads of
train-videos outside the lip-sync test folders (sadtalker, aniportrait, deepfacelive),
and dev-videos' non-GRID talking heads. Steps 0, 1 (with --av) and 4 (3 folds) run on it,
then 5_train's engine trains the config on fold 0 (the other folds' videos; `--folds`:
one model per fold named, validated on that fold).

Held-out tests, each scored end to end by 6_predict's pipeline with the checkpoint:
- `auc_shifted`: the 11 GRID clips of dev-videos against the same clips with their sound
  advanced by 0.5-1.0 s (both re-encoded alike, H.264 + AAC, so the codec tells nothing);
- `auc_shifted_other`: the same test on the 7 REAL clips of the lip-sync folders (MEAD,
  HyperLips' demos; talking heads at other sizes than GRID's, never trained on);
  `*_pairs_ordered` is the share of pairs whose shifted copy scores above its synced one;
  `baseline_auc_*` the same tests scored without learning (`sync_baselines`: how well mouth
  motion and loudness correlate), a reference for what the learned model should beat, and
  `baseline_lips_auc_*` another (how well the outer lips' opening, from dlib's 68 points,
  and loudness correlate: one of the numbers `mds_lips_cpu` learns from);
- `auc_lipsync`: train-videos' lip-sync fakes against their folders' reals (hyperlips:
  HyperLips; sadtalker_video_lipsync: Wav2Lip, video-retalking, SadTalker variants),
  never trained on.
Prints one JSON object with the AUCs and balanced log losses, their video counts, and
`train_s`. Target (issue #11): auc_shifted >= 0.9 on CPU. `--checkpoint` scores a trained
model on the tests without training (train_s is then 0, epochs_run null, and the validation
AUC the checkpoint's own epoch's).

`--seeds S1 S2 ...` trains one model per seed on the same data (the sample and the tests'
sound shifts are drawn with `--seed`) and scores them as 6_predict's ensemble (the mean of
their probabilities): the top-level AUCs are then the ensemble's, and `members` lists each
model's own. `--folds 0 1 2` trains one model per fold instead (with `--seeds`, one per fold
and seed), as run_all.sh's FOLDS="0 1 2" does: each validated on its own fold, together
they have trained on every video.
`--checkpoint A B ...` scores several trained models the same way.
`--sync-fakes` adds train-videos' audio-driven generated talking heads outside the lip-sync
test folders (SadTalker, AniPortrait's audio-driven results, StyleTalk, Wav2Lip on AI avatars:
SYNC_FAKE_METHODS, 15 clips) to the training set as speech in sync, labelled REAL there: a
sync detector's positives are faces that move with their own sound, generated or not.
The lip-sync test's fakes score lower then (a sync detector learns to accept lips that follow
the sound); the shifted tests are unchanged in content.
`--dfdc-speech` adds dev-videos' 4 DFDC clips (DFDC_FOLDER: 1 REAL and 3 face swaps, which keep
their source's voice and mouth motion, 10 s each) to the training set the same way, as REAL.
An `--out` folder keeps one `--seed`'s data, with or without those two options (and refuses
another setting): reruns reuse it.
"""
import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TRAIN_REAL_FOLDERS = ("sadtalker", "aniportrait", "deepfacelive")
LIPSYNC_FOLDERS = ("hyperlips", "sadtalker_video_lipsync")
# --sync-fakes: generated talking heads whose mouths a model drove from their own sound track
# (one image + audio, or Wav2Lip on a still avatar), outside the lip-sync test folders. For a
# sync detector they are speech in sync, real voices on faces that move with them: more
# speaking clips to learn from (their wrong-sound copies the FAKEs), not fakes to detect.
SYNC_FAKE_METHODS = ("SadTalker (one image + audio", "AniPortrait (audio-driven", "Wav2Lip on AI-generated avatar",
                     "StyleTalk (one image + audio")
# --dfdc-speech: dev-videos' DFDC clips (1 REAL, 3 face swaps whose originals are not present).
# A DFDC face swap keeps its source video's mouth motion and sound, so all four are speech in
# sync; none of them is in a test here (bench/quality scores them, not this bench).
DFDC_FOLDER = "dfdc_sample"
FOLDS = 3  # step 4's folds of the training set


def link_reals(out: Path, sources: list[tuple[Path, str]]) -> int:
    """A folder of links to REAL videos with a metadata.json listing them."""
    out.mkdir(parents=True, exist_ok=True)
    meta = {}
    for path, name in sources:
        if not (out / name).exists():
            (out / name).symlink_to(path.resolve())
        meta[name] = {"label": "REAL", "original": None, "split": "train"}
    (out / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return len(meta)


def link_name(video) -> str:
    """A train-videos video's file name in the bench's training folders: its id, flattened."""
    return video.id.replace("/", "__") + video.path.suffix


def sync_fakes(dataset) -> list:
    """The FAKE videos of `dataset` (train-videos, loaded) whose metadata "method" is one of
    SYNC_FAKE_METHODS, outside the lip-sync test folders."""
    return [v for v in dataset.videos if v.is_fake and v.id.split("/")[0] not in LIPSYNC_FOLDERS
            and (v.method or "").startswith(SYNC_FAKE_METHODS)]


def dfdc_speech(dev_videos: Path) -> list[tuple[Path, str]]:
    """(path, name) of every clip of dev-videos' DFDC folder, REAL or FAKE (--dfdc-speech)."""
    from preprocessing.dataset import load_dataset

    return [(v.path, v.path.name) for v in load_dataset(dev_videos / DFDC_FOLDER).videos]


def reencode(src: Path, dst: Path, shift: float) -> None:
    """H.264 CRF 18 + AAC; the sound advanced by `shift` s (0: in sync)."""
    from preprocessing.video import ffmpeg_exe

    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), "-ss", f"{shift:.3f}", "-i", str(src),
           "-map", "0:v:0", "-map", "1:a:0", "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-ar", "16000", "-ac", "1", str(dst)]
    subprocess.run(cmd, check=True)


def shifted_pairs(clips: list[tuple[Path, str]], folder: Path, rng: np.random.Generator) -> tuple[list, list]:
    """([(name, path)], labels): each clip re-encoded with its own sound (REAL, 0) and with the
    sound advanced by 0.5-1.0 s (FAKE, 1), in that order, both the same way."""
    folder.mkdir(parents=True, exist_ok=True)
    videos, labels = [], []
    for src, stem in clips:
        for label, shift in ((0, 0.0), (1, float(rng.uniform(0.5, 1.0)))):
            dst = folder / f"{stem}_{'shift' if label else 'sync'}.mp4"
            if not dst.exists():
                reencode(src, dst, shift)
            videos.append((dst.name, dst))
            labels.append(label)
    return videos, labels


def sync_baselines(videos: list[tuple[str, Path]]) -> dict[str, list[float]]:
    """Two non-learned references for the shifted tests, per video over its first 10 whole
    seconds at 25 steps a second, each minus a correlation with the sound's loudness (the log
    energy, MFCC 0, of the same 40 ms), on the 96-px face crops the dissonance configs read.
    No sound or no face: 0.
    - "motion": the mouth's motion, the mean absolute difference of consecutive grey mouth
      regions;
    - "lips": the outer lips' opening over the eyes' distance (`training.lips`: dlib's 68
      points fitted in the face box of each crop enlarged to 192 px), what the lip-landmark
      stream (`mds_lips_cpu`) reads among its other numbers."""
    import cv2

    from inference.predictor import FaceExtractor
    from training.av_data import mfcc_window
    from training.lips import OUTER_OPENING, crops_lip_features, required_predictor
    from training.zoo.mds import MOUTH_REGION, region_rows_cols

    margin = 0.15
    key = (96, margin, 1.0)
    # every anchor detected, as 6_predict does for dissonance models (refined boxes in between
    # would shift the mouth region by a few pixels from frame to frame: motion that is not there)
    extract = FaceExtractor(num_frames=8, margins=(margin,), av_segments=[(25, *key)], max_segments=10,
                            detect_every=1)
    predictor = required_predictor()
    rows, cols = region_rows_cols((96, 96), MOUTH_REGION)

    def score(signal, loud) -> float:
        ok = np.std(signal) > 0 and np.std(loud) > 0
        return -float(np.corrcoef(signal, loud)[0, 1]) if ok else 0.0

    out = {"motion": [], "lips": []}
    for _, path in videos:
        faces = extract(path)
        segs = faces.segments.get((*key, 25), [])
        if faces.mfcc is None or not segs:
            out["motion"].append(0.0)
            out["lips"].append(0.0)
            continue
        crops = [c for _, seg in segs for c in seg]  # consecutive seconds: the frames run on across them
        loud = np.concatenate([mfcc_window(faces.mfcc, start)[0].reshape(25, 4).mean(1) for start, _ in segs])
        grey = np.stack([cv2.cvtColor(c, cv2.COLOR_RGB2GRAY)[rows, cols].astype(np.float32) for c in crops])
        motion = np.abs(np.diff(grey, axis=0)).mean((1, 2))  # between frames t and t + 1
        out["motion"].append(score(motion, loud[1:]))
        out["lips"].append(score(crops_lip_features(crops, margin, predictor)[0][:, OUTER_OPENING], loud))
    return out


def auc(labels, probs) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, probs)) if len(set(labels)) == 2 else float("nan")


def member_auc(labels, probs) -> float:
    """One ensemble member's AUC, a video it abstained on (no sound) scored 0.5 as 6_predict
    scores it for a model alone: the same videos as the ensemble's AUC."""
    return round(auc(labels, [0.5 if p is None else p for p in probs]), 4)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=Path("configs/mds_cpu.json"))
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_av"))
    p.add_argument("--train-videos", type=Path, default=SHARED / "train-videos")
    p.add_argument("--dev-videos", type=Path, default=SHARED / "dev-videos")
    p.add_argument("--epochs", type=int, default=None, help="default: the config's")
    p.add_argument("--seed", type=int, default=0, help="the data's seed, and the model's without --seeds")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="train one model per seed (same data) and score them as an ensemble")
    p.add_argument("--folds", type=int, nargs="+", default=None, choices=range(FOLDS),
                   help=f"train one model per fold (of {FOLDS}; default: fold 0) and score them as an ensemble")
    p.add_argument("--checkpoint", type=Path, nargs="+", default=None,
                   help="score these checkpoints (several: as an ensemble); do not train")
    p.add_argument("--sync-fakes", action="store_true",
                   help="also train on train-videos' audio-driven generated talking heads (outside the "
                        "lip-sync test folders) as speech in sync, with their own sound")
    p.add_argument("--dfdc-speech", action="store_true",
                   help="also train on dev-videos' DFDC clips (1 REAL, 3 face swaps that keep their "
                        "source's voice and mouth motion) as speech in sync")
    a = p.parse_args()
    if a.seeds is not None and a.checkpoint is not None:
        p.error("--seeds trains models, --checkpoint scores trained ones: give one of them")
    if a.seeds is not None and len(set(a.seeds)) != len(a.seeds):
        p.error(f"--seeds repeats a seed: {a.seeds}")
    if a.folds is not None and a.checkpoint is not None:
        p.error("--folds trains models, --checkpoint scores trained ones: give one of them")
    if a.folds is not None and len(set(a.folds)) != len(a.folds):
        p.error(f"--folds repeats a fold: {a.folds}")

    from inference.predictor import model_names, predict_videos
    from preprocessing.av import extract_av
    from preprocessing.crops import extract_crops
    from preprocessing.dataset import load_dataset
    from preprocessing.faces import detect_faces
    from preprocessing.folds import generate_folds
    from preprocessing.runner import StepOptions
    from preprocessing.sample_data import generate_sample_dataset
    from training.config import load_config
    from training.engine import balanced_log_loss, load_checkpoint, train

    for d in (a.train_videos, a.dev_videos):
        if not d.is_dir():
            print(json.dumps({"error": f"{d} not found"}))
            return 1
    cfg = load_config(a.config)
    tv = load_dataset(a.train_videos)  # its reals (and sync fakes) train; its lip-sync folders test
    data, work = a.out / "train", a.out / "work"
    t0 = time.time()
    # holds the data's seed (the sample, its folds and the tests' shifts) and the options that add clips
    marker = data / ".complete"
    options = [name for name, on in (("sync-fakes", a.sync_fakes), ("dfdc-speech", a.dfdc_speech)) if on]
    stamp = " ".join([str(a.seed)] + options)
    if marker.exists() and marker.read_text().strip() != stamp:
        print(json.dumps({"error": f"{a.out} holds data made with other settings "
                                   f"({marker.read_text().strip() or 'unknown'}) than --seed {a.seed}"
                                   f"{''.join(' --' + o for o in options)}: use another --out"}))
        return 1
    if not marker.exists():
        shutil.rmtree(data, ignore_errors=True)
        generate_sample_dataset(data, folders=4, reals=4, fakes=0, seconds=3.0, seed=a.seed, audio=True,
                                av_fakes=2, prefix="sample_av")
        reals = [(v.path, link_name(v)) for v in tv.videos
                 if not v.is_fake and v.id.split("/")[0] in TRAIN_REAL_FOLDERS]
        dev = load_dataset(a.dev_videos / "real_talking_heads")
        reals += [(v.path, v.path.name) for v in dev.videos if v.path.suffix != ".mpg"]
        link_reals(data / "talking_heads", reals)
        if a.sync_fakes:
            link_reals(data / "sync_fakes", [(v.path, link_name(v)) for v in sync_fakes(tv)])
        if a.dfdc_speech:
            link_reals(data / "dfdc_speech", dfdc_speech(a.dev_videos))
        marker.write_text(f"{stamp}\n")
    opts = StepOptions(data_dir=data, work_dir=work, progress=False)
    detect_faces(opts)
    extract_crops(opts)
    extract_av(opts)
    generate_folds(opts, folds=FOLDS, group_by="original")
    preprocess_s = time.time() - t0

    t0 = time.time()
    cfg["data"]["workers"] = min(cfg["data"]["workers"], 2)
    if a.checkpoint is not None:
        # each checkpoint's history: its own epoch's validation
        results = [SimpleNamespace(best=c, history=[load_checkpoint(c)["metrics"]]) for c in a.checkpoint]
    else:
        # one model per (fold, seed); the checkpoint's name carries its fold
        runs = [(f, s) for f in (a.folds or [0]) for s in (a.seeds or [a.seed])]
        results = [train(cfg, work, fold=f, seed=s, progress=False, epochs=a.epochs,
                         weights_dir=a.out / "weights" / (f"seed{s}" if a.seeds else ""))
                   for f, s in runs]
    train_s = time.time() - t0 if a.checkpoint is None else 0.0
    checkpoints = [str(r.best) for r in results]
    names = model_names(checkpoints)
    members = [{"checkpoint": c} for c in checkpoints]
    if a.checkpoint is None:
        for m, (f, s) in zip(members, runs):
            m.update(fold=f, seed=s)

    def score(videos):
        """The ensemble's probability per video, in order, and each member's (None: abstained)."""
        pred = predict_videos(videos, checkpoints, progress=False, details=len(checkpoints) > 1)
        rows = dict(pred.rows)
        each = [[pred.details.get(n, {}).get("models", {}).get(name, {}).get("video_score") for n, _ in videos]
                for name in names] if len(checkpoints) > 1 else [[rows[n] for n, _ in videos]]
        return [rows[n] for n, _ in videos], pred, each

    # held-out test 1: GRID clips vs the same clips with the sound advanced; 1b: the same with
    # the lip-sync folders' REAL clips (never trained on either; their fakes are test 2)
    grid = sorted((a.dev_videos / "real_talking_heads").glob("*.mpg"))
    other = [(v.path, v.id.replace("/", "__")) for v in tv.videos
             if not v.is_fake and v.id.split("/")[0] in LIPSYNC_FOLDERS]
    out = {"config": str(a.config), "sync_fakes": a.sync_fakes, "dfdc_speech": a.dfdc_speech,
           "videos_with_sound": sum(1 for _ in (work / "audio").rglob("*.wav"))}
    if a.checkpoint is not None:
        out["checkpoint"] = checkpoints[0] if len(checkpoints) == 1 else checkpoints
    for key, clips, folder, seed in (("shifted", [(c, c.stem) for c in grid], "test_shifted", a.seed + 7),
                                     ("shifted_other", other, "test_shifted_other", a.seed + 8)):
        shifted, labels = shifted_pairs(clips, a.out / folder, np.random.default_rng(seed))
        t1 = time.time()
        probs, pred, each = score(shifted)
        if key == "shifted":
            predict_s = (time.time() - t1) / max(1, len(shifted))
        for m, member in zip(members, each):
            m[f"auc_{key}"] = member_auc(labels, member)
        out.update({f"auc_{key}": round(auc(labels, probs), 4),
                    f"balanced_log_loss_{key}": round(balanced_log_loss(np.array(labels), np.array(probs)), 4),
                    f"{key}_videos": len(shifted), f"{key}_abstained": len(pred.errors),
                    # within each pair: is the shifted copy the more dissonant?
                    f"{key}_pairs_ordered": round(float(np.mean([probs[i + 1] > probs[i]
                                                                  for i in range(0, len(probs), 2)])), 4),
                    **{f"baseline{'' if name == 'motion' else '_' + name}_auc_{key}": round(auc(labels, b), 4)
                       for name, b in sync_baselines(shifted).items()}})

    # held-out test 2: lip-sync fakes against their folders' reals
    lip, lip_labels, per_folder = [], [], {}
    for v in tv.videos:
        folder = v.id.split("/")[0]
        if folder in LIPSYNC_FOLDERS:
            lip.append((v.id, v.path))
            lip_labels.append(int(v.is_fake))
            per_folder.setdefault(folder, []).append(len(lip) - 1)
    probs, pred, each = score(lip)
    for m, member in zip(members, each):
        m["auc_lipsync"] = member_auc(lip_labels, member)
    out.update({"auc_lipsync": round(auc(lip_labels, probs), 4),
                "balanced_log_loss_lipsync": round(balanced_log_loss(np.array(lip_labels), np.array(probs)), 4),
                "lipsync_videos": len(lip),
                "lipsync_fakes": int(sum(lip_labels)),
                "auc_lipsync_per_folder": {f: round(auc([lip_labels[i] for i in ix], [probs[i] for i in ix]), 4)
                                           for f, ix in per_folder.items()}})
    for m, r in zip(members, results):
        best = min(r.history, key=lambda h: h["balanced_log_loss"])
        m.update({"epochs_run": len(r.history) if a.checkpoint is None else None,
                  "best_epoch": int(best.get("epoch", len(r.history) - 1)) if a.checkpoint is None else None,
                  "val_auc_best_epoch": round(best["auc"], 4)})
    out.update({k: members[0][k] for k in ("epochs_run", "val_auc_best_epoch")} if len(members) == 1 else
               {"members": members})
    out.update({"train_s": round(train_s, 1), "preprocess_s": round(preprocess_s, 1),
                "predict_s_per_video": round(predict_s, 2)})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
