import math

import numpy as np
import pytest
import torch

from training.engine import ShardedRandomSampler, video_metrics
from training.losses import WeightedLoss, balanced_bce, bce, smooth
from training.schedules import create_scheduler


def _lrs(schedule, steps_per_epoch=10, n=None):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = create_scheduler(opt, schedule, steps_per_epoch)
    out = []
    for _ in range(n or schedule["epochs"] * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_poly_decay():
    lrs = _lrs({"type": "poly", "epochs": 4, "warmup_epochs": 1, "params": {"power": 1.0}})
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warm-up over 10 steps
    assert lrs[10] == pytest.approx(1.0) and lrs[25] == pytest.approx(1 - 15 / 30)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_cosine_and_step():
    cos = _lrs({"type": "cosine", "epochs": 2, "params": {"min_lr_ratio": 0.1}})
    assert cos[0] == pytest.approx(1.0) and cos[10] == pytest.approx(0.55) and min(cos) > 0.1
    step = _lrs({"type": "step", "epochs": 3, "params": {"step_size": 1, "gamma": 0.5}})
    assert step[5] == 1.0 and step[15] == 0.5 and step[25] == 0.25


def test_balanced_bce_is_the_mean_of_the_two_halves():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    target = torch.tensor([1.0, 1.0, 1.0, 0.0])
    fake = bce(logits[:3], target[:3])
    real = bce(logits[3:], target[3:])
    assert balanced_bce(logits, target).item() == pytest.approx(((fake + real) / 2).item())
    # selim: a class absent from the batch contributes 0, so the loss is half the other's
    assert balanced_bce(logits[:3], target[:3]).item() == pytest.approx(fake.item() / 2)


def test_label_smoothing_clips_targets_as_selim():
    # selim: np.clip(label, eps, 1 - eps) with --label-smoothing 0.01
    assert smooth(torch.tensor([0.0, 1.0, 0.3]), 0.01).tolist() == pytest.approx([0.01, 0.99, 0.3])
    assert smooth(torch.tensor([0.0, 1.0]), 0.1).tolist() == pytest.approx([0.1, 0.9])


def test_label_smoothing_and_weights():
    loss = WeightedLoss({"BinaryCrossentropy": 2.0}, label_smoothing=0.0)
    x, y = torch.tensor([0.3, -0.2]), torch.tensor([1.0, 0.0])
    assert loss(x, y).item() == pytest.approx(2 * bce(x, y).item())


def test_video_metrics_average_crops_per_video():
    m = video_metrics(["a", "a", "b", "b"], [1, 1, 0, 0], [0.9, 0.7, 0.2, 0.4])
    expected = -(math.log(0.8) + math.log(0.7)) / 2
    assert m["videos"] == 2 and m["log_loss"] == pytest.approx(expected) and m["auc"] == 1.0
    assert math.isnan(video_metrics(["a"], [1], [0.9])["auc"])


def test_video_metrics_balanced_log_loss_is_selims_validation_score():
    # 3 fakes at 0.9 and 1 real at 0.6: the mean of the FAKE and the REAL video log losses
    m = video_metrics(["f1", "f2", "f3", "r"], [1, 1, 1, 0], [0.9, 0.9, 0.9, 0.6])
    fake, real = -math.log(0.9), -math.log(0.4)
    assert m["balanced_log_loss"] == pytest.approx((fake + real) / 2)
    assert m["log_loss"] == pytest.approx((3 * fake + real) / 4)
    # a constant 0.5 scores ln 2 whatever the class ratio
    c = video_metrics(["a", "b", "c"], [1, 1, 0], [0.5, 0.5, 0.5])
    assert c["balanced_log_loss"] == pytest.approx(math.log(2))


def test_sharded_sampler_is_deterministic_and_disjoint_per_epoch():
    s = [ShardedRandomSampler(100, 8, seed=1, rank=r, world_size=2) for r in range(2)]
    a0, b0 = list(s[0]), list(s[1])
    assert len(a0) == len(b0) == 8
    assert a0 == list(ShardedRandomSampler(100, 8, seed=1, rank=0, world_size=2))
    s[0].set_epoch(1)
    assert list(s[0]) != a0


def test_checkpoint_of_an_sbi_pairs_config_still_loads(tmp_path):
    """`data.sbi` with a dataset that never used it became a config error; a checkpoint
    trained so (the flag was ignored) still loads for prediction, with the flag off."""
    from training.config import ConfigError, validate
    from training.engine import build_model, model_from_checkpoint, save_checkpoint

    cfg = validate({"network": "DeepFakeClassifier", "encoder": "tf_efficientnet_lite0", "pretrained": False,
                    "size": 64, "data": {"dataset": "pairs"}})
    model = build_model(cfg, pretrained=False).eval()
    old = dict(cfg, data=dict(cfg["data"], sbi=True))
    with pytest.raises(ConfigError, match="does not use it"):
        validate(old)
    save_checkpoint(tmp_path / "old.pt", model, old, 0, {})
    loaded, loaded_cfg = model_from_checkpoint(tmp_path / "old.pt")
    assert loaded_cfg["data"]["sbi"] is False and loaded_cfg["data"]["dataset"] == "pairs"
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize("config", ["lite0_cpu", "lite0_seq3d_cpu", "deit_distill_cpu", "mds_cpu", "mds_motion_cpu",
                                    "mds_sync_cpu", "mos_cpu"])
def test_channels_last_computes_what_the_contiguous_model_computes(config):
    """Config key `channels_last` (default on): build_model puts every 4-D weight in NHWC and
    every 5-D one (the 3-D convolutions of the sequence and dissonance models) in NDHWC
    order. The same weights give the same logits, and the model trains (no view of a
    non-contiguous activation anywhere)."""
    from training import fingerprint
    from training.config import load_config
    from training.engine import REPO_ROOT, build_model

    cfg = load_config(REPO_ROOT / "configs" / f"{config}.json")
    assert cfg["channels_last"] is True
    torch.manual_seed(0)
    fast = build_model(cfg, pretrained=False)
    torch.manual_seed(0)
    plain = build_model(dict(cfg, channels_last=False), pretrained=False)
    convs = [m.weight for m in fast.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert convs
    for w in convs:  # (a 1x1 or depthwise kernel is both: its orders coincide)
        assert w.is_contiguous(memory_format=torch.channels_last if w.dim() == 4 else torch.channels_last_3d)
    assert any(not w.is_contiguous() for w in convs)
    for w in (m.weight for m in plain.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))):
        assert w.is_contiguous()
    a, b = fingerprint.logits(fast, cfg), fingerprint.logits(plain, cfg)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

    x = fingerprint.fingerprint_input(cfg).expand(2, *fingerprint.fingerprint_input(cfg).shape[1:]).contiguous()
    fast.train()
    if cfg["network"] == "DissonanceNet":
        width = round(100 * float(cfg["data"]["av_segment_s"]))
        r = fast(x, torch.randn(2, 1, 13, width))
        loss = r.distance.sum() + r.video_logit.sum()
    else:
        out = fast(x)
        loss = sum(o.float().sum() for o in (out if isinstance(out, (tuple, list)) else [out]))
    loss.backward()
    grads = [m.weight.grad for m in fast.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)) and m.weight.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_channels_last_is_a_boolean_config_key():
    from training.config import ConfigError, validate

    assert validate({})["channels_last"] is True
    assert validate({"channels_last": False})["channels_last"] is False
    for bad in ("yes", 1, 0.0):
        with pytest.raises(ConfigError, match="channels_last"):
            validate({"channels_last": bad})


def test_head_warmup_trains_the_head_alone_with_dropout_off_as_ntech():
    """NTech's warm-up ran `model.eval(); model._fc.train()`: BatchNorm statistics frozen
    and no dropout before the head; afterwards the whole model trains again."""
    from training.engine import set_head_warmup
    from training.zoo.classifiers import DeepFakeClassifier

    model = DeepFakeClassifier("tf_efficientnet_lite0", pretrained=False, dropout=0.5)
    model.train()
    ids = {id(p) for p in model.head.parameters()}
    set_head_warmup(model, ids, True)
    assert model.head.training and not model.dropout.training and not model.encoder.training
    assert not any(m.training for m in model.encoder.modules())
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(model(x), model(x))  # no dropout, no batch statistics
    set_head_warmup(model, ids, False)
    assert all(m.training for m in model.modules())
    # the model itself stays in training mode: the distilled model's forward returns its two
    # logits only then, and the distillation loss needs both
    set_head_warmup(model, ids, True)
    assert model.training and model.head.training and not model.dropout.training


def test_head_warmup_trains_both_heads_of_the_distilled_model():
    """The distilled model has two heads (or one shared): a warm-up keeps both trainable."""
    from training.engine import drop_encoder_grads, head_param_ids, set_head_warmup
    from training.zoo import create_model

    for shared in (False, True):
        model = create_model("DeepFakeClassifierDistill", "tf_efficientnet_lite0", vit="deit_tiny_patch16_224",
                             size=64, shared_head=shared).train()
        ids = head_param_ids(model)
        heads = [model.head] + ([] if shared else [model.head_dist])
        assert ids == {id(p) for h in heads for p in h.parameters()}
        set_head_warmup(model, ids, True)
        assert all(h.training for h in heads) and not model.vit.training and not model.encoder.training
        cls_logit, dist_logit = model(torch.randn(2, 3, 64, 64))  # still training mode: two logits
        (cls_logit.sum() + dist_logit.sum()).backward()
        drop_encoder_grads(model, ids)
        assert all(p.grad is not None for h in heads for p in h.parameters())
        assert model.dist_token.grad is None and all(p.grad is None for p in model.vit.parameters())


def test_bn_momentum_sets_every_batchnorm_and_is_off_by_default():
    from training.engine import build_model
    from training.config import validate

    cfg = validate({"encoder": "tf_efficientnet_lite0", "pretrained": False, "size": 64, "bn_momentum": 0.01})
    bns = [m for m in build_model(cfg).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.01 for m in bns)
    cfg = validate({"encoder": "tf_efficientnet_lite0", "pretrained": False, "size": 64})
    assert all(m.momentum == 0.1 for m in build_model(cfg).modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_fold_all_is_spelled_all_on_the_command_line_and_in_checkpoint_names(tmp_path):
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    from conftest import REPO
    from training.engine import ALL_FOLDS, checkpoint_paths, fold_name

    spec = importlib.util.spec_from_file_location("train_cli", REPO / "5_train.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.parse_fold("all") == ALL_FOLDS and cli.parse_fold("3") == 3
    assert fold_name(ALL_FOLDS) == "all" and fold_name(2) == "2"
    assert [p.name for p in checkpoint_paths(Path("w"), "m", ALL_FOLDS)] == ["m_foldall_best.pt", "m_foldall_last.pt"]
    for bad in ("-1", "x"):
        proc = subprocess.run([sys.executable, "5_train.py", "--config", "c.json", "--work-dir", str(tmp_path),
                               "--fold", bad], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "a fold number" in proc.stderr


def test_no_validation_refuses_what_needs_a_validation_score():
    from conftest import REPO
    from training.config import load_config, validate
    from training.engine import check_no_validation

    base = {"network": "DeepFakeClassifier", "encoder": "tf_efficientnet_lite0", "pretrained": False, "size": 64}
    check_no_validation(validate(dict(base)))  # a plain detector trains on every fold
    with pytest.raises(ValueError, match="early_stopping"):
        check_no_validation(validate(dict(base, early_stopping=3)))
    with pytest.raises(ValueError, match="plateau"):
        check_no_validation(validate(dict(base, optimizer={"schedule": {"type": "plateau"}})))
    with pytest.raises(ValueError, match="dissonance"):
        check_no_validation(load_config(REPO / "configs" / "mds_cpu.json"))
