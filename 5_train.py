#!/usr/bin/env python
"""Step 5: train one fold of a config -> weights/{name}_fold{k}_{best,last}.pt, WORK_DIR/logs/.

    python 5_train.py --config configs/lite0_cpu.json --data-dir D --work-dir W --fold 0
    torchrun --nproc_per_node 8 5_train.py --config configs/b7.json --data-dir D --work-dir W --fold 0

`--fold all` trains on every fold with no validation (a final fit with the config's epochs,
chosen beforehand with a validated run): weights/{name}_foldall_{best,last}.pt, both the final epoch's.
"""
import argparse
import sys
from pathlib import Path

from training.config import ConfigError, load_config


def summary_line(cfg: dict, fold: int, result) -> str:
    """One line on the run: the last epoch's selection score and the epoch saved as _best
    (balanced log loss for a detector, RMSE for a realism model)."""
    from training.engine import ALL_FOLDS, describe_metrics, selection_score

    if fold == ALL_FOLDS:
        h = result.history[-1]
        return (f"[5_train] {cfg['name']} fold all: {len(result.history)} epochs on every fold, no validation, "
                f"last train_loss {h['train_loss']:.4f} -> {result.best}")
    name = "rmse" if cfg["task"] == "mos" else "balanced_log_loss"

    def score(m: dict) -> float:  # histories resumed from before balanced log loss have log loss only
        return selection_score(cfg, m) if name in m else m.get("log_loss", float("inf"))

    h = result.history[-1]
    keeps_last = cfg.get("keep_checkpoint") == "last"
    best = h if keeps_last else min(result.history, key=score)  # the epoch saved as _best
    described = describe_metrics(best) if name in best else f"val_log_loss {score(best):.4f}"
    return (f"[5_train] {cfg['name']} fold {fold}: {len(result.history)} epochs, last val {name} "
            f"{score(h):.4f}, {'saved' if keeps_last else 'best'} epoch "
            f"{best.get('epoch', '?')}: {described} -> {result.best}")


def parse_fold(text: str) -> int:
    """'0', '1', ... or 'all' (training.engine.ALL_FOLDS, -1)."""
    if text == "all":
        return -1
    try:
        fold = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a fold number or 'all', got {text!r}") from None
    if fold < 0:
        raise argparse.ArgumentTypeError(f"a fold number (>= 0) or 'all', got {text!r}")
    return fold


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--data-dir", type=Path, default=None, help="the dataset (recorded in the checkpoint)")
    p.add_argument("--work-dir", required=True, type=Path, help="holds folds.csv and the crops of steps 0-4")
    p.add_argument("--fold", type=parse_fold, default=0,
                   help="validation fold (its number in folds.csv), or 'all': every fold trains, no validation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", type=Path, default=None, help="a *_last.pt checkpoint to continue")
    p.add_argument("--pretrained", default=None,
                   help="local file of encoder weights (overrides the config's 'pretrained')")
    p.add_argument("--weights-dir", type=Path, default=Path(__file__).resolve().parent / "weights")
    p.add_argument("--name", default=None, help="checkpoint name (default: the config's name or file stem)")
    p.add_argument("--teacher", default=None, help="distillation teacher checkpoint (overrides distill.teacher)")
    p.add_argument("--epochs", type=int, default=None, help="override optimizer.schedule.epochs")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the config's)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args()
    try:
        cfg = load_config(a.config)
        if a.name:
            cfg["name"] = a.name
        if a.teacher:
            cfg["distill"]["teacher"] = a.teacher
        from training.engine import cleanup_distributed, train

        try:
            result = train(cfg, a.work_dir, fold=a.fold, seed=a.seed, resume=a.resume, pretrained=a.pretrained,
                           weights_dir=a.weights_dir, device=a.device, workers=a.workers, epochs=a.epochs,
                           progress=not a.no_progress, data_dir=a.data_dir)
        finally:
            cleanup_distributed()
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.history:
        print(summary_line(cfg, a.fold, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
