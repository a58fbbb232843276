"""Realism (MOS) regression, DFGC-2023 VRA: pooling, loss, metrics, config, data, training
and prediction."""
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO
from training.config import ConfigError, validate
from training.engine import mos_metrics, video_mos_metrics
from training.losses import WeightedLoss, rmse
from training.zoo import RealismRegressor, create_model, mean_std_pool


def mos_cfg(**over):
    cfg = {"name": "tinymos", "task": "mos", "network": "RealismRegressor", "encoder": "tf_efficientnet_lite0",
           "pretrained": False, "size": 64, "dropout": 0.1, "batches_per_epoch": 3, "fp16": True,
           "optimizer": {"type": "AdamW", "batch_size": 2, "accumulate": 2, "learning_rate": 1e-3,
                         "weight_decay": 0.01, "schedule": {"type": "plateau", "epochs": 2,
                                                            "params": {"factor": 0.1, "patience": 0}}},
           "normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
           "losses": {"RMSE": 1},
           "data": {"dataset": "sequences", "seq_len": 3, "augment": "none", "hardcore": False, "workers": 0}}
    for k, v in over.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    return validate(cfg)


# --------------------------------------------------------------------------- model
def test_mean_std_pool_values_and_shapes():
    x = torch.tensor([[[1.0, 10.0], [3.0, 10.0], [5.0, 13.0]]])  # (B=1, T=3, F=2)
    out = mean_std_pool(x)
    assert out.shape == (1, 4)
    # mean [3, 11]; unbiased std: sqrt(((-2)^2 + 0 + 2^2) / 2) = 2, sqrt((1 + 1 + 4) / 2) = sqrt(3)
    torch.testing.assert_close(out, torch.tensor([[3.0, 11.0, 2.0, math.sqrt(3.0)]]))
    one = mean_std_pool(torch.randn(5, 1, 7))  # one frame: no spread, zeros (not NaN)
    assert out.dtype == one.dtype and one.shape == (5, 14) and torch.all(one[:, 7:] == 0)
    with pytest.raises(ValueError, match="B, T, F"):
        mean_std_pool(torch.randn(2, 3))


def test_regressor_outputs_one_mos_per_clip_and_starts_at_the_prior():
    torch.manual_seed(0)
    model = create_model("RealismRegressor", "tf_efficientnet_lite0", pretrained=False, dropout=0.1).eval()
    assert isinstance(model, RealismRegressor)
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(2560, 512), (512, 256), (256, 64), (64, 1)]
    clip = torch.randn(3, 5, 3, 64, 64)
    out = model(clip)
    assert out.shape == (3, 1) and out.dtype == torch.float32
    # a frame's order in the clip does not matter (mean and std), its content does
    torch.testing.assert_close(model(clip.flip(1)), out, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(model(clip[:, :1].expand(-1, 5, -1, -1, -1)), out)
    model.set_prior(3.3)
    with torch.no_grad():
        model.head[-1].weight.zero_()
    torch.testing.assert_close(model(clip), torch.full((3, 1), 3.3))
    assert "prior" in model.state_dict() and float(model.state_dict()["prior"]) == pytest.approx(3.3)


def test_regressor_loads_a_dataparallel_classifier_checkpoint_as_vra_did(tmp_path):
    """VRA's ConvNeXt started from their DFGC-2022 detector: a DataParallel state dict
    ("module." keys) with a 2-class head. `pretrained: PATH` loads its backbone, head dropped."""
    import timm

    torch.manual_seed(1)
    detector = timm.create_model("convnext_atto", pretrained=False, num_classes=2)
    path = tmp_path / "dfgc2022.pth"
    torch.save(torch.nn.DataParallel(detector).state_dict(), path)
    model = create_model("RealismRegressor", "convnext_atto", pretrained=str(path))
    got = model.encoder.state_dict()
    assert "head.norm.weight" in got  # ConvNeXt's pooled features keep the head's LayerNorm
    for k, v in got.items():
        torch.testing.assert_close(v, detector.state_dict()[k], msg=k)


def test_regressor_head_stays_float32_under_autocast():
    """Under bf16 autocast the backbone runs in bf16 but the MLP head in float32: a bf16
    Linear would round a MOS near 3.3 to steps of 1/64."""
    torch.manual_seed(0)
    model = create_model("RealismRegressor", "tf_efficientnet_lite0", pretrained=False, dropout=0.1).eval()
    model.set_prior(3.3)
    clip = torch.randn(4, 3, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(clip)
        pooled = mean_std_pool(model.frame_features(clip).float())
    assert out.dtype == torch.float32
    with torch.no_grad():
        expected = model.head(pooled)  # float32, outside autocast
        rounded = expected.to(torch.bfloat16).float()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert (rounded - expected).abs().max() > 1e-4  # what a bf16 head would have lost


# --------------------------------------------------------------------------- loss and metrics
def test_rmse_loss_against_hand_values():
    pred, target = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([[1.0], [3.0], [2.0]])
    assert float(rmse(pred, target)) == pytest.approx(math.sqrt((0 + 1 + 4) / 3))
    assert float(WeightedLoss({"RMSE": 1.0})(pred, target)) == pytest.approx(math.sqrt(5 / 3))


def test_mos_metrics_against_hand_values():
    m = mos_metrics([1.0, 2.0, 3.0], [1.5, 2.0, 2.5])
    assert m["videos"] == 3 and m["plcc"] == pytest.approx(1.0) and m["srcc"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5 / 3)) and m["mae"] == pytest.approx(1 / 3)
    m = mos_metrics([1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 3.0])
    assert m["plcc"] == pytest.approx(0.6) and m["srcc"] == pytest.approx(0.6)
    assert m["rmse"] == pytest.approx(1.0) and m["mae"] == pytest.approx(1.0)
    flat = mos_metrics([1.0, 2.0], [3.0, 3.0])  # a constant prediction has no correlation
    assert math.isnan(flat["plcc"]) and math.isnan(flat["srcc"]) and flat["rmse"] == pytest.approx(math.sqrt(2.5))
    # per video: the mean over its clips
    per = video_mos_metrics(["a", "a", "b"], [2.0, 2.0, 4.0], [1.0, 3.0, 5.0])
    assert per["videos"] == 2 and per["rmse"] == pytest.approx(math.sqrt(0.5))


# --------------------------------------------------------------------------- config
def test_config_ties_task_network_loss_and_dataset():
    cfg = mos_cfg()
    assert cfg["task"] == "mos" and cfg["optimizer"]["accumulate"] == 2 and cfg["early_stopping"] == 0
    bad = [({"network": "DeepFakeClassifier"}, "goes with network RealismRegressor"),
           ({"losses": {"BinaryCrossentropy": 1}}, "losses.BinaryCrossentropy"),
           ({"data": {"dataset": "frames"}}, "must be 'sequences'"),
           ({"label_smoothing": 0.1}, "label_smoothing"),
           ({"early_stopping": -1}, "early_stopping"),
           ({"optimizer": {"accumulate": 0}}, "optimizer.accumulate"),
           ({"optimizer": {"schedule": {"type": "plateau", "params": {"factor": 2}}}}, "plateau"),
           ({"task": "realism"}, "'task'")]
    for over, message in bad:
        with pytest.raises(ConfigError, match=message):
            mos_cfg(**over)
    with pytest.raises(ConfigError, match="RealismRegressor"):  # a detector never gets a MOS loss or network
        validate({"network": "RealismRegressor", "data": {"dataset": "sequences"}, "losses": {"RMSE": 1}})
    with pytest.raises(ConfigError, match="not for task 'detect'"):
        validate({"losses": {"RMSE": 1}})


def test_shipped_mos_configs_are_valid():
    from training.config import load_config

    for name in ("mos_convnext", "mos_eva", "mos_cpu"):
        cfg = load_config(REPO / "configs" / f"{name}.json")
        assert cfg["task"] == "mos" and cfg["losses"] == {"RMSE": 1}
    gpu = load_config(REPO / "configs" / "mos_convnext.json")  # VRA's settings
    assert (gpu["optimizer"]["batch_size"], gpu["optimizer"]["accumulate"], gpu["optimizer"]["learning_rate"]) == (2, 8, 2e-5)
    assert gpu["optimizer"]["schedule"]["type"] == "plateau" and gpu["early_stopping"] == 4
    assert gpu["data"]["seq_len"] == 5 and gpu["data"]["augment"] == "none" and gpu["dropout"] == 0.1


# --------------------------------------------------------------------------- data
def _folds(rows):
    return pd.DataFrame(rows, columns=["video", "file", "label", "original", "frame", "face", "fold", "mos"])


def test_mos_rows_need_every_fake_rated_and_leave_unrated_reals_out():
    from training.datasets import mos_rows

    df = _folds([["r", "crops/r/0_0.png", 0, "r", 0, 0, 0, np.nan],
                 ["f", "crops/f/0_0.png", 1, "r", 0, 0, 0, 3.2],
                 ["g", "crops/g/0_0.png", 1, "", 0, 0, 1, np.nan]])
    with pytest.raises(ValueError, match=r"1 FAKE video\(s\) have no MOS.*'g'"):
        mos_rows(df)
    kept = mos_rows(df[df.video != "g"])
    assert kept.video.tolist() == ["f"]
    with pytest.raises(ValueError, match="no 'mos' column"):
        mos_rows(df.drop(columns="mos"))


def test_load_folds_reads_mos_as_float_with_nan_for_unrated(tmp_path):
    from training.datasets import load_folds

    (tmp_path / "folds.csv").write_text("video,file,label,original,frame,face,fold,mos\n"
                                        "r,crops/r/0_0.png,0,r,0,0,0,\nf,crops/f/0_0.png,1,r,0,0,0,3.4\n")
    df = load_folds(tmp_path)
    assert df.mos.dtype == float and math.isnan(df.mos[0]) and df.mos[1] == 3.4 and df.original[1] == "r"
    (tmp_path / "folds.csv").write_text("video,file,label,original,frame,face,fold,mos\nf,c.png,1,,0,0,0,high\n")
    with pytest.raises(ValueError, match="'mos' holds a value that is not a number"):
        load_folds(tmp_path)


def mos_work(sample_work, tmp_path):
    """A work dir over the sample's artifacts whose folds.csv rates each FAKE by its position."""
    work, _ = sample_work
    out = tmp_path / "mos_work"
    out.mkdir()
    for child in work.iterdir():
        if child.name != "folds.csv" and child.name != "logs":
            (out / child.name).symlink_to(child)
    df = pd.read_csv(work / "folds.csv", keep_default_na=False)
    fakes = sorted(df.video[df.label == 1].unique())
    mos = {v: 1.0 + 3.0 * i / max(1, len(fakes) - 1) for i, v in enumerate(fakes)}
    df["mos"] = df.video.map(lambda v: mos.get(v, ""))
    df.to_csv(out / "folds.csv", index=False)
    return out, mos


def test_mos_dataset_items_and_video_uniform_epochs(sample_work, tmp_path):
    from training.datasets import MosSequenceDataset, load_folds

    work, mos = mos_work(sample_work, tmp_path)
    df = load_folds(work)
    ds = MosSequenceDataset(work, df, fold=-1, train=True, cfg=mos_cfg(margin=0.15), seed=0)
    assert set(ds.rows.video) == set(mos)  # the unrated REALs are left out
    item = ds.get_item(0, np.random.default_rng(0))
    assert item["image"].shape == (3, 3, 64, 64)
    assert float(item["label"]) == pytest.approx(mos[item["video"]])
    assert ds.default_epoch_size() == len(mos)
    idx = ds.epoch_indices(0, 40 * len(mos))
    per_video = pd.Series([ds.rows.video[i] for i in idx]).value_counts()
    assert set(per_video) == {40}  # every video equally often, whatever its length
    assert ds.epoch_indices(1, 20) != ds.epoch_indices(0, 20) and ds.epoch_indices(0, 20) == ds.epoch_indices(0, 20)


# --------------------------------------------------------------------------- prediction units
def test_mos_ensemble_and_weighted_detection_ensemble():
    from inference.aggregation import ensemble, mos_ensemble

    preds = [np.array([2.0, 4.0]), np.array([1.0]), np.zeros(0)]
    assert mos_ensemble(preds) == pytest.approx(2.0)  # (3 + 1) / 2: the empty model is left out
    assert mos_ensemble(preds, [0.75, 0.25, 1.0]) == pytest.approx(0.75 * 3 + 0.25 * 1)
    assert mos_ensemble([np.zeros(0)]) is None
    with pytest.raises(ValueError, match="2 weights for 3 models"):
        mos_ensemble(preds, [1, 1])
    probs = [np.full(4, 0.2), np.full(4, 0.6)]
    assert ensemble(probs, "mean") == pytest.approx(0.4)
    assert ensemble(probs, "mean", [3, 1]) == pytest.approx(0.3)


def test_random_clip_plan_is_seeded_distinct_and_inside_the_video():
    from inference.predictor import frame_plan

    anchors, clips, wanted = frame_plan(100, 10, clip_len=5, num_clips=10, rng=np.random.default_rng([0, 7]))
    again = frame_plan(100, 10, clip_len=5, num_clips=10, rng=np.random.default_rng([0, 7]))
    other = frame_plan(100, 10, clip_len=5, num_clips=10, rng=np.random.default_rng([1, 7]))
    assert (anchors, clips, wanted) == again and anchors != other[0]
    assert len(anchors) == 10 == len(set(anchors)) and set(anchors) == clips
    assert min(anchors) >= 0 and max(anchors) <= 95 and max(wanted) <= 99
    assert wanted == {a + j for a in anchors for j in range(5)}
    short, _, _ = frame_plan(6, 10, clip_len=5, num_clips=10, rng=np.random.default_rng(0))
    assert short == [0, 1]  # fewer starts than clips: every start once


# --------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_mos_model_trains_predicts_and_refuses_to_mix(sample_work, sample_dir, tmp_path):
    from inference.predictor import predict_dir
    from test_train import tiny
    from training.engine import load_checkpoint, model_from_checkpoint, train

    work, mos = mos_work(sample_work, tmp_path)
    result = train(mos_cfg(margin=0.15, early_stopping=1), work, fold=0, seed=0, weights_dir=tmp_path / "w",
                   progress=False)
    assert result.best and 1 <= len(result.history) <= 2
    h = result.history[0]
    assert {"rmse", "plcc", "srcc", "mae"} <= set(h) and h["videos"] >= 1 and h["rmse"] > 0
    last = load_checkpoint(result.last)
    assert last["scheduler"]["_last_lr"] and "best_score" in last  # ReduceLROnPlateau state, resumable
    model, cfg = model_from_checkpoint(result.best)  # fingerprint verified on a clip
    train_videos = pd.read_csv(work / "folds.csv", keep_default_na=False).query("fold != 0")
    rated = [mos[v] for v in train_videos.video.unique() if v in mos]
    assert float(model.prior) == pytest.approx(np.mean(rated), rel=1e-5)

    pred = predict_dir(sample_dir, [result.best], progress=False, mos_sequences=3, seed=1)
    again = predict_dir(sample_dir, [result.best], progress=False, mos_sequences=3, seed=1)
    assert pred.task == "mos" and len(pred.rows) == len(list(sample_dir.rglob("*.mp4")))
    assert pred.rows == again.rows  # seeded random clips: reproducible
    assert pred.timings["frames_detected"] == 3 * len(pred.rows)  # each random start detected, none interpolated
    assert all(np.isfinite(v) for _, v in pred.rows)

    out = tmp_path / "mos.csv"
    proc = subprocess.run([sys.executable, "6_predict.py", "--test-dir", str(sample_dir), "--output", str(out),
                           "--models", str(result.best), str(result.best), "--weights", "0.75", "0.25",
                           "--sequences", "2", "--no-progress"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["filename", "mos"] and len(sub) == len(pred.rows)

    detector = train(tiny(), sample_work[0], fold=0, weights_dir=tmp_path / "d", progress=False).best
    proc = subprocess.run([sys.executable, "6_predict.py", "--test-dir", str(sample_dir), "--output",
                           str(tmp_path / "mixed.csv"), "--models", str(result.best), str(detector)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "cannot be mixed" in proc.stderr and not (tmp_path / "mixed.csv").exists()
    json.dumps(h)  # the metrics are plain numbers (history goes into JSON logs)


def _train_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_step", REPO / "5_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_5_train_summary_picks_the_best_epoch_by_rmse_for_mos_and_log_loss_for_detection():
    from types import SimpleNamespace

    step = _train_script()
    mos = [{"epoch": 0, "rmse": 0.9, "plcc": 0.1, "srcc": 0.2, "mae": 0.8},
           {"epoch": 1, "rmse": 0.4, "plcc": 0.7, "srcc": 0.8, "mae": 0.3},
           {"epoch": 2, "rmse": 0.6, "plcc": 0.6, "srcc": 0.7, "mae": 0.5}]
    line = step.summary_line({"task": "mos", "name": "m"}, 0, SimpleNamespace(history=mos, best="b.pt"))
    assert "last val rmse 0.6000" in line and "best epoch 1: val_rmse 0.4000" in line and "srcc 0.8000" in line
    det = [{"epoch": 0, "balanced_log_loss": 0.5, "log_loss": 0.4, "auc": 0.9},
           {"epoch": 1, "balanced_log_loss": 0.6, "log_loss": 0.3, "auc": 0.8}]
    line = step.summary_line({"task": "detect", "name": "d"}, 1, SimpleNamespace(history=det, best="b.pt"))
    assert "fold 1" in line and "best epoch 0: val_balanced_log_loss 0.5000" in line
    # a history resumed from before the balanced log loss existed: its log loss decides
    old = [{"epoch": 0, "log_loss": 0.7}, {"epoch": 1, "log_loss": 0.5}]
    line = step.summary_line({"task": "detect", "name": "d"}, 0, SimpleNamespace(history=old, best="b.pt"))
    assert "best epoch 1: val_log_loss 0.5000" in line
    # keep_checkpoint last (NTech's, Heo et al.'s): _best.pt is the final epoch, whatever its score
    line = step.summary_line({"task": "detect", "name": "d", "keep_checkpoint": "last"}, 1,
                             SimpleNamespace(history=det, best="b.pt"))
    assert "saved epoch 1: val_balanced_log_loss 0.6000" in line
