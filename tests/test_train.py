"""The training engine end to end on the generated sample (steps 0-4 already run)."""
import hashlib
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from training.config import validate
from training.engine import load_checkpoint, model_from_checkpoint, train
from conftest import REPO

pytestmark = pytest.mark.slow


def tiny(network="DeepFakeClassifier", **over):
    cfg = {
        "name": "tiny", "network": network, "encoder": "tf_efficientnet_lite0", "pretrained": False,
        "size": 64, "batches_per_epoch": 2, "fp16": True, "grad_clip": 1.0,
        "optimizer": {"type": "AdamW", "batch_size": 4, "learning_rate": 1e-3, "weight_decay": 0.01,
                      "schedule": {"type": "cosine", "epochs": 1, "warmup_epochs": 0.5}},
        "normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "losses": {"BalancedBinaryCrossentropy": 1},
        "data": {"dataset": "frames", "hardcore": True, "sbi": True, "workers": 0},
    }
    for k, v in over.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    return validate(cfg)


def test_frame_model_trains_saves_and_reloads_strictly(sample_work, tmp_path):
    work, _ = sample_work
    result = train(tiny(), work, fold=0, seed=1, weights_dir=tmp_path, progress=False)
    assert result.best and result.last and len(result.history) == 1
    m = result.history[0]
    assert m["videos"] > 0 and 0 < m["log_loss"] < 5 and m["imgs_per_s"] > 0
    ckpt = load_checkpoint(result.last)
    assert {"config", "state_dict", "epoch", "metrics", "optimizer", "scheduler", "scaler"} <= set(ckpt)
    assert ckpt["config"]["network"] == "DeepFakeClassifier" and ckpt["epoch"] == 0
    best = load_checkpoint(result.best)
    assert "optimizer" not in best  # the best checkpoint is for inference: small
    assert best["work_dir"] == load_checkpoint(result.last)["work_dir"] == str(work.resolve())  # run_all's check
    model, cfg = model_from_checkpoint(result.best)
    x = torch.randn(2, 3, 64, 64)
    result.model.eval()
    torch.testing.assert_close(model(x), result.model(x))
    assert (work / "logs" / "tiny_fold0").is_dir()


def test_keep_checkpoint_last_saves_the_final_epoch_as_best(sample_work, tmp_path, monkeypatch):
    import training.engine as engine
    work, _ = sample_work
    cfg = tiny(optimizer={"schedule": {"type": "cosine", "epochs": 2}})
    scores = iter([0.1, 0.2, 0.1, 0.2, 0.1])  # epoch 1 never beats epoch 0
    monkeypatch.setattr(engine, "selection_score", lambda cfg, metrics: next(scores))
    runs = {keep: train(dict(cfg, keep_checkpoint=keep), work, fold=0, seed=2, weights_dir=tmp_path / keep,
                        progress=False) for keep in ("best", "last")}
    for keep, epoch in (("best", 0), ("last", 1)):  # selim's rule keeps epoch 0; NTech's the final one
        best, last = load_checkpoint(runs[keep].best), load_checkpoint(runs[keep].last)
        assert best["epoch"] == epoch and last["epoch"] == 1 and last["finished"]
    best, last = load_checkpoint(runs["last"].best), load_checkpoint(runs["last"].last)
    for k, v in last["state_dict"].items():
        assert torch.equal(v, best["state_dict"][k]), k

    real_evaluate, calls = engine.evaluate, []

    def killed_in_epoch_1(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", killed_in_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        train(dict(cfg, keep_checkpoint="last"), work, fold=0, seed=2, weights_dir=tmp_path / "killed", progress=False)
    killed = load_checkpoint(tmp_path / "killed" / "tiny_fold0_last.pt")
    assert killed["epoch"] == 0 and killed["finished"] is False  # run_all resumes it (training.origin --unfinished)


def test_fold_all_trains_on_every_fold_without_validation(sample_work, tmp_path, monkeypatch):
    """--fold all (ALL_FOLDS): every fold's rows train, nothing is validated, and _best.pt is
    the final epoch's (as keep_checkpoint "last"), named foldall; 5_train's CLI spells it 'all'.
    What needs a validation score is refused before anything trains."""
    import training.engine as engine
    from training.datasets import load_folds

    work, _ = sample_work
    train_ds, val_ds = engine.build_datasets(tiny(), work, engine.ALL_FOLDS, 0)
    assert val_ds is None and len(train_ds.rows) == len(load_folds(work))  # every crop of every fold
    monkeypatch.setattr(engine, "evaluate", lambda *a, **k: pytest.fail("validated with no validation fold"))
    cfg = tiny(optimizer={"schedule": {"type": "cosine", "epochs": 2}})
    result = train(cfg, work, fold=engine.ALL_FOLDS, seed=4, weights_dir=tmp_path, progress=False)
    assert result.best.name == "tiny_foldall_best.pt" and result.last.name == "tiny_foldall_last.pt"
    best, last = load_checkpoint(result.best), load_checkpoint(result.last)
    assert best["epoch"] == last["epoch"] == 1 and last["finished"] and best["fold"] == engine.ALL_FOLDS
    assert all(torch.equal(v, best["state_dict"][k]) for k, v in last["state_dict"].items())
    assert [sorted(h) for h in result.history] == [["epoch", "imgs_per_s", "lr", "train_loss"]] * 2
    assert (work / "logs" / "tiny_foldall").is_dir()
    from training.distill import load_teacher

    with pytest.raises(ValueError, match="leak"):  # it trained on every fold: a fold-0 student's too
        load_teacher(result.best, 0)
    fold0 = tmp_path / "fold0_teacher.pt"
    torch.save(dict(best, fold=0), fold0)
    assert load_teacher(fold0, engine.ALL_FOLDS).fold == 0  # a student that validates on nothing takes any
    with pytest.raises(ValueError, match="same fold"):
        train(cfg, work, fold=0, weights_dir=tmp_path / "other", progress=False, resume=result.last)
    for over, why in (({"early_stopping": 2}, "early_stopping"),
                      ({"optimizer": {"schedule": {"type": "plateau", "epochs": 2}}}, "plateau")):
        with pytest.raises(ValueError, match=why):
            train(tiny(**over), work, fold=engine.ALL_FOLDS, weights_dir=tmp_path / "no", progress=False)
    assert not (tmp_path / "no").exists()


def test_resume_continues_the_schedule(sample_work, tmp_path):
    work, _ = sample_work
    cfg = tiny(optimizer={"schedule": {"type": "cosine", "epochs": 2}})
    full = train(cfg, work, fold=0, seed=3, weights_dir=tmp_path / "full", progress=False)
    first = train(cfg, work, fold=0, seed=3, weights_dir=tmp_path / "resumed", progress=False, epochs=1)
    ckpt = load_checkpoint(first.last)
    assert ckpt["epoch"] == 0 and ckpt["scheduler"]["last_epoch"] == 2
    resumed = train(cfg, work, fold=0, seed=3, weights_dir=tmp_path / "resumed", progress=False,
                    resume=first.last)
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    assert resumed.history[-1]["lr"] == pytest.approx(full.history[-1]["lr"])
    last = load_checkpoint(resumed.last)
    assert last["epoch"] == 1 and last["scheduler"]["last_epoch"] == 4
    steps = [s["step"] for s in last["optimizer"]["state"].values()]
    assert all(float(s) == 4 for s in steps)  # AdamW moments carried over, not restarted


def test_ema_weights_are_validated_saved_and_resumed(sample_work, tmp_path):
    """optimizer.ema_decay: the checkpoint holds timm's average (decay 1 - n^-3/4 after n steps:
    a copy at the first), the raw weights travel in train_state_dict, resume goes on from both."""
    work, _ = sample_work
    cfg = tiny(batches_per_epoch=1, optimizer={"ema_decay": 0.99, "schedule": {"type": "constant", "epochs": 2}})
    first = train(cfg, work, fold=0, seed=5, weights_dir=tmp_path, progress=False, epochs=1)
    one = load_checkpoint(first.last)
    floats = [k for k, v in one["state_dict"].items() if v.is_floating_point()]
    assert one["metrics"]["ema_decay"] == 0.0
    for k in floats:  # after one step the average is the weights themselves
        torch.testing.assert_close(one["state_dict"][k], one["train_state_dict"][k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="_last.pt"):  # _best.pt: no optimizer, no raw weights
        train(cfg, work, fold=0, seed=5, weights_dir=tmp_path / "x", progress=False, resume=first.best)
    second = train(cfg, work, fold=0, seed=5, weights_dir=tmp_path, progress=False, resume=first.last)
    two = load_checkpoint(second.last)
    d = 1 - 2 ** -0.75
    assert two["metrics"]["ema_decay"] == pytest.approx(d)
    moved = 0
    for k in floats:
        w1, w2, e2 = one["train_state_dict"][k], two["train_state_dict"][k], two["state_dict"][k]
        torch.testing.assert_close(e2, d * w1 + (1 - d) * w2)
        moved += int(not torch.equal(w1, w2))
    assert moved > 0 and not all(torch.equal(two["state_dict"][k], two["train_state_dict"][k]) for k in floats)
    model, _ = model_from_checkpoint(second.last)  # the average, with its fingerprint verified
    x = torch.randn(2, 3, 64, 64)
    second.model.eval()
    torch.testing.assert_close(model(x), second.model(x))
    # a run without an average, resumed with one: the average starts at its weights
    plain = train(tiny(batches_per_epoch=1, optimizer={"schedule": {"type": "constant", "epochs": 2}}), work,
                  fold=0, seed=5, weights_dir=tmp_path / "plain", progress=False, epochs=1)
    w1 = load_checkpoint(plain.last)["state_dict"]
    late = load_checkpoint(train(cfg, work, fold=0, seed=5, weights_dir=tmp_path / "plain", progress=False,
                                 resume=plain.last).last)
    for k in floats:
        torch.testing.assert_close(late["state_dict"][k], d * w1[k] + (1 - d) * late["train_state_dict"][k])


@pytest.mark.parametrize("network, data", [
    ("DeepFakeClassifierSeq3D", {"dataset": "sequences", "seq_len": 3}),  # with SBI clips (tiny's sbi)
    ("DeepFakeClassifierSeq3D", {"dataset": "sequence_pairs", "seq_len": 3, "mixup_alpha": 0.5, "sbi": False}),
])
def test_sequence_model_trains(sample_work, tmp_path, network, data):
    work, _ = sample_work
    result = train(tiny(network, data=data, optimizer={"batch_size": 2}), work, fold=1, weights_dir=tmp_path,
                   progress=False)
    assert result.best and result.history[0]["videos"] > 0


def test_pair_mixup_training_step(sample_work, tmp_path):
    work, _ = sample_work
    result = train(tiny(data={"dataset": "pairs", "mixup_alpha": 0.5, "sbi": False},
                        losses={"BinaryCrossentropy": 1}), work, fold=0, weights_dir=tmp_path, progress=False)
    assert result.history and result.history[0]["log_loss"] > 0


def test_distillation_with_a_frozen_teacher(sample_work, tmp_path):
    work, _ = sample_work
    teacher = train(tiny(), work, fold=0, weights_dir=tmp_path, progress=False).best
    before = load_checkpoint(teacher)["state_dict"]
    cfg = tiny("DeepFakeClassifierDistill", model={"vit": "deit_tiny_patch16_224"}, distill={"teacher": str(teacher)})
    cfg["name"] = "student"
    result = train(cfg, work, fold=0, weights_dir=tmp_path, progress=False)
    saved = load_checkpoint(result.best)["state_dict"]
    assert not any(k.startswith("teacher") for k in saved)  # the teacher is not saved
    after = load_checkpoint(teacher)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_WORKER = r"""
import hashlib, json, os, sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from test_train import tiny
from training.engine import train, cleanup_distributed
r = train(tiny(), {work!r}, fold=0, seed=5, weights_dir={out!r}, progress=False, device="cpu")
h = hashlib.sha256()
for name, p in sorted(r.model.named_parameters()):
    h.update(name.encode()); h.update(p.detach().cpu().numpy().tobytes())
open(os.path.join({out!r}, "rank%s.json" % os.environ["RANK"]), "w").write(json.dumps({{"hash": h.hexdigest()}}))
cleanup_distributed()
"""


def test_two_process_gloo_ddp_ends_with_identical_weights(sample_work, tmp_path):
    work, _ = sample_work
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER.format(repo=str(REPO), tests=str(REPO / "tests"), work=str(work), out=str(tmp_path)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), str(script)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hashes = [json.loads((tmp_path / f"rank{r}.json").read_text())["hash"] for r in range(2)]
    assert hashes[0] == hashes[1]
    assert (tmp_path / "tiny_fold0_last.pt").exists()  # written once, by rank 0
    single = train(tiny(), work, fold=0, seed=5, weights_dir=tmp_path / "single", progress=False)
    h = hashlib.sha256()
    for name, p in sorted(single.model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes())
    assert h.hexdigest() != hashes[0]  # the two ranks really trained together on other data


def test_cli_reports_a_bad_config(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"network": "DeepFakeClassifier", "learning_rate": 1}))
    proc = subprocess.run([sys.executable, "5_train.py", "--config", str(tmp_path / "bad.json"),
                           "--work-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "unknown config key 'learning_rate'" in proc.stderr
