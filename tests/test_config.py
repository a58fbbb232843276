import json
from pathlib import Path

import pytest

from training.config import ConfigError, input_hw, load_config, validate

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg["name"] == path.stem
    assert min(input_hw(cfg)) >= 32


def test_cpu_config_for_every_family():
    cpu = [load_config(p) for p in CONFIGS if p.stem.endswith("_cpu")]
    assert {c["network"] for c in cpu} == {"DeepFakeClassifier", "DeepFakeClassifierSeq3D",
                                           "DeepFakeClassifierDistill", "RealismRegressor", "DissonanceNet"}
    full = {p.stem: load_config(p) for p in CONFIGS}
    assert full["b7"]["encoder"] == "tf_efficientnet_b7.ns_jft_in1k" and full["b7"]["size"] == 380
    assert {"b7_ntech_large_crop", "b7_ntech_re", "b7_ntech_seq", "deit_distill"} <= set(full)


def test_defaults_are_filled_in():
    cfg = validate({"network": "DeepFakeClassifier", "encoder": "tf_efficientnet_lite0"})
    assert cfg["optimizer"]["schedule"]["type"] == "poly" and cfg["losses"] == {"BinaryCrossentropy": 1.0}


@pytest.mark.parametrize("bad, message", [
    ({"encodr": "x"}, "unknown config key 'encodr'"),
    ({"optimizer": {"schedule": {"typ": "poly"}}}, "unknown config key 'optimizer.schedule.typ'"),
    ({"data": {"sbi": True, "mixup": 1}}, "unknown config key 'data.mixup'"),
    ({"data": {"sbi_regions": {"eyes": 1}}}, "data.sbi_regions"),
    ({"data": {"sbi_regions": {"face": 0, "mouth": 0}}}, "data.sbi_regions"),
    ({"data": {"sbi_regions": [1, 2]}}, "data.sbi_regions"),
    ({"data": {"sbi": True, "dataset": "pairs"}}, "'data.dataset': 'pairs' does not use it"),
    ({"network": "DeepFakeClassifierSeq3D", "data": {"sbi": True, "dataset": "sequence_pairs"}},
     "'data.dataset': 'sequence_pairs' does not use it"),
    ({"data": {"sbi": True, "sbi_prob": 1.5}}, "'data.sbi_prob' must be a probability"),
    ({"data": {"train_fakes": False}}, "needs 'data.sbi' true"),
    ({"data": {"sbi": True, "train_fakes": "no"}}, "'data.train_fakes' must be true or false"),
    ({"data": {"av_swap_prob": -0.1}}, "'data.av_swap_prob' must be a probability"),
    ({"data": {"av_segment_s": 0}}, "'data.av_segment_s' must be > 0"),
    ({"optimizer": {"type": "Adamax"}}, "'optimizer.type' is 'Adamax'"),
    ({"losses": {"Focal": 1}}, "unknown loss 'losses.Focal'"),
    ({"size": 16}, "integer >= 32"),
    ({"size": [224, 192]}, "'data.resize': 'isotropic' pads to a square"),
    ({"size": "big"}, "must be an integer or"),
    ({"data": {"augment": "randaug"}}, "'data.augment'"),
    ({"data": {"sbi": True, "sbi_style": "paper"}}, "'data.sbi_style'"),
    ({"data": {"sbi_pairs": True}}, "'data.sbi_pairs' pairs each SBI fake"),
    ({"network": "DeepFakeClassifierSeq3D", "data": {"sbi": True, "sbi_pairs": True, "dataset": "sequences"}},
     "'data.dataset': 'frames'"),
    ({"data": {"sbi": True, "sbi_pairs": True}, "optimizer": {"batch_size": 15}}, "must be even"),
    ({"data": {"sbi": True, "sbi_pairs": 1}}, "'data.sbi_pairs' must be true or false"),
    ({"data": {"sbi": True, "sbi_pairs": True, "sbi_prob": 0}}, "'data.sbi_prob' 0 makes none"),
    ({"distill": {"loss": "kl"}}, "'distill.loss'"),
    ({"margin": 3}, "'margin' must be a number"),
    ({"bn_momentum": 0}, "'bn_momentum' must be a number in (0, 1]"),
    ({"task": "av", "network": "DissonanceNet", "optimizer": {"head_warmup_steps": 10}}, "DissonanceNet has none"),
    ({"bn_momentum": True}, "'bn_momentum' must be a number in (0, 1]"),
    ({"size": 120, "network": "DeepFakeClassifierDistill", "distill": {"teacher": "t.pt"}}, "multiple of 16"),
    ({"optimizer": {"batch_size": 0}}, "optimizer.batch_size"),
    ({"optimizer": {"ema_decay": 1.0}}, "'optimizer.ema_decay' must be a number"),
    ({"optimizer": {"ema_decay": True}}, "'optimizer.ema_decay' must be a number"),
    ({"network": "DeepFakeClassifierDistill", "size": 384}, "distill.teacher"),
    ({"network": "DeepFakeClassifierSeq3D"}, "'data.dataset': 'sequences'"),
    ({"optimizer": 3}, "must be an object"),
    ({"keep_checkpoint": "final"}, "'keep_checkpoint' must be 'best' or 'last'"),
    ({"keep_checkpoint": "last", "early_stopping": 2}, "use one or the other"),
])
def test_bad_configs_name_the_key(bad, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        validate(bad)


def test_load_config_names_the_file(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"sizee": 224}))
    with pytest.raises(ConfigError, match=r"x\.json: unknown config key 'sizee'"):
        load_config(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_config(tmp_path / "y.json")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "z.json")


def test_b7_is_selims_recipe():
    """selim's train_classifier.py + configs/b7.json + train.sh, setting by setting."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "b7.json")
    assert cfg["encoder"] == "tf_efficientnet_b7.ns_jft_in1k" and cfg["size"] == 380
    assert cfg["drop_path_rate"] == 0.2 and cfg["dropout"] == 0.0
    assert cfg["label_smoothing"] == 0.01 and cfg["grad_clip"] == 1.0
    assert cfg["losses"] == {"BalancedBinaryCrossentropy": 1}
    o = cfg["optimizer"]
    assert (o["type"], o["batch_size"], o["learning_rate"], o["momentum"], o["weight_decay"], o["nesterov"]) == \
        ("SGD", 12, 0.01, 0.9, 1e-4, True)
    assert o["schedule"]["type"] == "poly" and o["schedule"]["epochs"] * cfg["batches_per_epoch"] == 100_000
    assert cfg["data"]["dataset"] == "frames" and cfg["data"]["hardcore"] and not cfg["data"]["sbi"]
    assert cfg["data"]["augment"] == "selim" and cfg["data"]["resize"] == "isotropic"
    assert cfg["margin"] is None  # the crops' own: step 1's default is his 1/3
    assert cfg["keep_checkpoint"] == "best"  # his lowest validation (REAL + FAKE log loss) / 2
    assert cfg["bn_momentum"] is None  # timm's B7 keeps PyTorch's 0.1


def test_deit_distill_is_heo_et_als_recipe():
    """smu-ivpl/DeepfakeDetection: configs/deit_distill.json, train-distill.sh, facebook_deit.py
    and classifiers.py's DeepFakeClassifier_Distill, setting by setting."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "deit_distill.json")
    assert cfg["network"] == "DeepFakeClassifierDistill" and cfg["size"] == 384
    assert cfg["encoder"] == "tf_efficientnet_b7.ns_jft_in1k"
    # deit_distill_large_patch32_384: ViT-L/32 with the jx (ImageNet-21k -> 1k) weights
    assert cfg["model"] == {"vit": "vit_large_patch32_384.orig_in21k_ft_in1k", "tokens": "fused",
                            "shared_head": True, "output": "dist"}
    assert cfg["drop_path_rate"] == 0.2 and cfg["dropout"] == 0.0  # both encoders' init_op; dropout_rate 0
    assert cfg["label_smoothing"] == 0.01 and cfg["grad_clip"] == 1.0
    assert cfg["keep_checkpoint"] == "last"  # predict_submission_vit.sh took each seed's _last
    assert cfg["losses"] == {"BalancedBinaryCrossentropy": 1}  # (fake_loss + real_loss) / 2, both terms
    assert cfg["distill"]["loss"] == "soft" and cfg["distill"]["alpha"] == 0.5  # BCE(dist, sigmoid(teacher))
    o = cfg["optimizer"]
    assert (o["type"], o["batch_size"], o["learning_rate"], o["momentum"], o["weight_decay"], o["nesterov"]) == \
        ("SGD", 12, 0.01, 0.9, 1e-4, True)
    assert o["schedule"]["type"] == "poly" and o["schedule"]["epochs"] * cfg["batches_per_epoch"] == 100_000
    assert o["head_warmup_steps"] == 0
    assert cfg["normalize"]["mean"] == [0.485, 0.456, 0.406]  # ImageNet's, as theirs (not the jx ViT's 0.5)
    assert cfg["data"]["dataset"] == "frames" and cfg["data"]["hardcore"] and cfg["data"]["augment"] == "selim"
    assert cfg["fp16"]


@pytest.mark.parametrize("name, short_side, erasing, network", [
    ("b7_ntech_large_crop", 192, 0.0, "DeepFakeClassifier"),
    ("b7_ntech_re", 224, 0.2, "DeepFakeClassifier"),
    ("b7_ntech_seq", 224, 0.0, "DeepFakeClassifierSeq3D"),
])
def test_ntech_configs_are_their_recipes(name, short_side, erasing, network):
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.json")
    d, o = cfg["data"], cfg["optimizer"]
    assert cfg["network"] == network and input_hw(cfg) == (224, 192) and cfg["margin"] == 0.25  # 1.5x box
    assert d["resize"] == "shortest" and d["short_side"] == short_side and d["augment"] == "ntech"
    assert d["autoaugment"] == "original-mstd0.5" and d["random_erasing"] == erasing
    assert d["mixup_alpha"] == 0.5 and d["reencode_prob"] == 0.5
    assert (o["type"], o["learning_rate"], o["momentum"], o["weight_decay"], o["nesterov"]) == ("SGD", 0.005, 0.9, 1e-4, True)
    assert o["head_warmup_steps"] == 100 and o["schedule"]["params"]["power"] == 1.0  # linear decay
    assert o["schedule"]["epochs"] * cfg["batches_per_epoch"] == 100_000
    assert cfg["inference"]["flip"] == "half" and cfg["label_smoothing"] == 0.0
    assert cfg["bn_momentum"] == 0.01  # lukemelas' B7: TF's batch_norm_momentum 0.99
    assert cfg["keep_checkpoint"] == "last"  # the 100k snapshot: NTech trained without validation
    # all three train on aligned real/fake pairs mixed up: frames, or whole clips
    assert d["dataset"] == ("sequence_pairs" if network == "DeepFakeClassifierSeq3D" else "pairs")
    if network == "DeepFakeClassifierSeq3D":
        assert d["seq_len"] == 7 and d["clip_fps"] == 15
