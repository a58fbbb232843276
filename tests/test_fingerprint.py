"""Checkpoint fingerprints (#9): a model that no longer computes what it computed when
saved fails loudly at load, naming the checkpoint, the difference and the versions."""
import pytest
import torch

from training.engine import build_model, load_checkpoint, model_from_checkpoint, save_checkpoint
from training.fingerprint import FingerprintError, fingerprint_input


def _tiny(network="DeepFakeClassifier", **over):
    from test_train import tiny

    return tiny(network, **over)


def test_input_is_deterministic_and_shaped_by_the_config():
    cfg = _tiny()
    x = fingerprint_input(cfg)
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    assert torch.equal(x, fingerprint_input(cfg)) and x.abs().max() <= 1.5 and x.std() > 0.5
    seq = _tiny("DeepFakeClassifierSeq3D", data={"dataset": "sequences", "seq_len": 3})
    assert fingerprint_input(seq).shape == (1, 3, 3, 64, 64)


@pytest.mark.parametrize("network, over", [("DeepFakeClassifier", {}),
                                           ("DeepFakeClassifierSeq3D", {"data": {"dataset": "sequences",
                                                                                 "seq_len": 3}})])
def test_saved_checkpoints_carry_a_fingerprint_that_loading_reproduces(tmp_path, network, over):
    cfg = _tiny(network, **over)
    torch.manual_seed(0)
    model = build_model(cfg, pretrained=False)
    model.train()  # saved mid-training: the fingerprint is taken in eval mode, training mode restored
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, cfg, 0, {})
    assert model.training
    record = load_checkpoint(path)["fingerprint"]
    assert record["version"] == "sin-v1" and {"torch", "timm"} <= set(record) and len(record["logits"]) >= 1
    loaded, _ = model_from_checkpoint(path)
    with torch.no_grad():
        assert torch.allclose(loaded(fingerprint_input(cfg)).flatten(), torch.tensor(record["logits"]), atol=1e-5)


def test_a_library_that_changed_behaviour_fails_loudly(tmp_path, monkeypatch):
    cfg = _tiny()
    path = tmp_path / "drift.pt"
    save_checkpoint(path, build_model(cfg, pretrained=False), cfg, 0, {})
    model_from_checkpoint(path)  # the same code: it loads
    # an upgrade in which ReLU6 no longer clips at 6 (Conv2dSame padding, a default eps...):
    # the same weights, other logits
    monkeypatch.setattr(torch.nn.ReLU6, "forward", lambda self, x: torch.relu(x) * 1.5)
    with pytest.raises(FingerprintError, match=r"drift\.pt.*differ by .*Saved with torch .*timm .*requirements"):
        model_from_checkpoint(path)


def test_weights_changed_behind_its_back_are_caught(tmp_path):
    cfg = _tiny()
    path = tmp_path / "edited.pt"
    save_checkpoint(path, build_model(cfg, pretrained=False), cfg, 0, {})
    ckpt = torch.load(path, weights_only=False)
    ckpt["state_dict"]["head.bias"] += 1.0  # every logit moves by 1
    torch.save(ckpt, path)
    with pytest.raises(FingerprintError, match="edited.pt"):
        model_from_checkpoint(path)
    del ckpt["fingerprint"]  # an older checkpoint without one still loads
    torch.save(ckpt, path)
    model_from_checkpoint(path)
