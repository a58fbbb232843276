import json
from pathlib import Path

import pytest

from training.config import ConfigError, load_config, validate

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg["name"] == path.stem
    assert cfg["size"] >= 32


def test_cpu_config_for_every_family():
    cpu = [load_config(p) for p in CONFIGS if p.stem.endswith("_cpu")]
    assert {c["network"] for c in cpu} == {"DeepFakeClassifier", "DeepFakeClassifierSeq3D",
                                           "DeepFakeClassifierDistill"}
    full = {p.stem: load_config(p) for p in CONFIGS}
    assert full["b7"]["encoder"] == "tf_efficientnet_b7.ns_jft_in1k" and full["b7"]["size"] == 380


def test_defaults_are_filled_in():
    cfg = validate({"network": "DeepFakeClassifier", "encoder": "tf_efficientnet_lite0"})
    assert cfg["optimizer"]["schedule"]["type"] == "poly" and cfg["losses"] == {"BinaryCrossentropy": 1.0}


@pytest.mark.parametrize("bad, message", [
    ({"encodr": "x"}, "unknown config key 'encodr'"),
    ({"optimizer": {"schedule": {"typ": "poly"}}}, "unknown config key 'optimizer.schedule.typ'"),
    ({"data": {"sbi": True, "mixup": 1}}, "unknown config key 'data.mixup'"),
    ({"optimizer": {"type": "Adam"}}, "'optimizer.type' is 'Adam'"),
    ({"losses": {"Focal": 1}}, "unknown loss 'losses.Focal'"),
    ({"size": 16}, "integer >= 32"),
    ({"size": 120, "network": "DeepFakeClassifierDistill", "distill": {"teacher": "t.pt"}}, "multiple of 16"),
    ({"optimizer": {"batch_size": 0}}, "optimizer.batch_size"),
    ({"network": "DeepFakeClassifierDistill", "size": 384}, "distill.teacher"),
    ({"network": "DeepFakeClassifierSeq3D"}, "'data.dataset': 'sequences'"),
    ({"optimizer": 3}, "must be an object"),
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
