#!/usr/bin/env python
"""Realism (MOS) regression end to end on generated data with a known realism.

    python bench/mos.py [--config configs/mos_cpu.json] [--out /tmp/bench_mos] [--train-folders 4]

`preprocessing/sample_data.py --mos` makes a training set and a held-out set (other
seed: other camera paths, swaps and artefact strengths) whose FAKEs carry a MOS that
falls with the strength of their swap artefacts. Steps 0, 1 (clip crops) and 4 (4 folds) run
on the training set, 5_train's engine trains the config with fold 0 validating, and
6_predict's pipeline scores the held-out FAKEs from the videos. Prints one JSON object:
PLCC, SRCC, RMSE and MAE on the held-out set, the training time and the preprocessing
and prediction times. Target (issue #10): SRCC >= 0.8 with under 10 minutes of training
on 2 CPU cores.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=Path("configs/mos_cpu.json"))
    p.add_argument("--out", type=Path, default=Path("/tmp/bench_mos"))
    p.add_argument("--train-folders", type=int, default=6, help="generated folders of 3 REAL + 6 FAKE clips")
    p.add_argument("--test-folders", type=int, default=2)
    p.add_argument("--seconds", type=float, default=2.0, help="length of each generated clip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="default: the config's")
    a = p.parse_args()

    from inference.predictor import dir_videos, predict_videos
    from preprocessing.crops import extract_crops
    from preprocessing.dataset import load_dataset
    from preprocessing.faces import detect_faces
    from preprocessing.folds import generate_folds
    from preprocessing.runner import StepOptions
    from preprocessing.sample_data import generate_sample_dataset
    from training.config import load_config
    from training.engine import mos_metrics, train

    cfg = load_config(a.config)
    train_dir, test_dir, work = a.out / "train", a.out / "test", a.out / "work"
    t0 = time.time()
    for folder, folders, seed in ((train_dir, a.train_folders, a.seed), (test_dir, a.test_folders, a.seed + 1000)):
        if not folder.is_dir():
            generate_sample_dataset(folder, folders=folders, reals=3, fakes=2, seconds=a.seconds, seed=seed, mos=True,
                                    prefix="mos_part")
    generate_s = time.time() - t0

    t0 = time.time()
    opts = StepOptions(data_dir=train_dir, work_dir=work, progress=False)
    detect_faces(opts, frame_step=5)
    extract_crops(opts, clip_len=cfg["data"]["seq_len"])
    generate_folds(opts, folds=4, group_by="original")  # fold 0 validates: a quarter of the rated fakes
    preprocess_s = time.time() - t0

    t0 = time.time()
    result = train(cfg, work, fold=0, seed=a.seed, weights_dir=a.out / "weights", epochs=a.epochs, progress=False)
    train_s = time.time() - t0

    t0 = time.time()
    truth = {v.path.relative_to(test_dir).as_posix(): v.mos for v in load_dataset(test_dir).videos if v.mos is not None}
    videos = [(n, path) for n, path in dir_videos(test_dir) if n in truth]
    pred = predict_videos(videos, [result.best], progress=False)
    predict_s = time.time() - t0
    scores = dict(pred.rows)
    held_out = mos_metrics([truth[n] for n, _ in videos], [scores[n] for n, _ in videos])

    best = min(result.history, key=lambda h: h["rmse"])
    print(json.dumps({
        "config": str(a.config), "encoder": cfg["encoder"], "size": cfg["size"], "seq_len": cfg["data"]["seq_len"],
        "train_videos": len(load_dataset(train_dir).videos), "held_out_fakes": held_out["videos"],
        **{k: round(v, 4) for k, v in held_out.items() if k != "videos"},
        "failed": len(pred.errors), "epochs_run": len(result.history), "best_epoch": best["epoch"],
        "val_rmse": round(best["rmse"], 4), "val_srcc": round(best["srcc"], 4),
        "train_s": round(train_s, 1), "preprocess_s": round(preprocess_s, 1), "generate_s": round(generate_s, 1),
        "predict_s_per_video": round(predict_s / max(1, len(videos)), 2),
        "mos_range": [min(truth.values()), max(truth.values())]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
