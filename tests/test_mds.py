"""Audio-visual dissonance (Chugh et al., MDS): the model, its loss, calibration and config."""
import math

import numpy as np
import pytest
import torch

from training.config import ConfigError, validate
from training.zoo import DissonanceNet, create_model
from training.zoo.mds import contrastive_loss, mds_loss


def mds_cfg(**over):
    cfg = {"name": "tinymds", "task": "av", "network": "DissonanceNet", "encoder": "r3d_18", "pretrained": False,
           "size": 32, "margin": 0.15, "batches_per_epoch": 4, "dropout": 0.5,
           "model": {"embedding": 32, "hidden": 64, "audio_channels": 8},
           "optimizer": {"type": "Adam", "batch_size": 4, "learning_rate": 1e-3, "weight_decay": 1e-5,
                         "schedule": {"type": "constant", "epochs": 1}},
           "losses": {"MDS": 1},
           "data": {"dataset": "av_segments", "seq_len": 4, "av_fake_prob": 0.5, "hardcore": False, "workers": 0}}
    for k, v in over.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    return validate(cfg)


def tiny_net(**kw):
    torch.manual_seed(0)
    return create_model("DissonanceNet", "r3d_18", pretrained=False, embedding=32, hidden=64, audio_channels=8, **kw)


def test_two_streams_give_a_distance_and_a_logit_each_per_segment():
    net = tiny_net().eval()
    assert isinstance(net, DissonanceNet)
    out = net(torch.randn(3, 4, 3, 32, 32), torch.randn(3, 1, 13, 100))
    assert out.distance.shape == out.video_logit.shape == out.audio_logit.shape == (3,)
    assert out.video_embedding.shape == out.audio_embedding.shape == (3, 32)
    torch.testing.assert_close(out.video_embedding.norm(dim=1), torch.ones(3))  # unit embeddings:
    assert bool(((out.distance >= 0) & (out.distance <= 2)).all())                # distances in [0, 2]
    with pytest.raises(ValueError, match="B, T, 3, H, W"):
        net(torch.randn(3, 3, 32, 32), torch.randn(3, 1, 13, 100))
    with pytest.raises(ValueError, match="r3d_18"):
        DissonanceNet("resnet18")


def test_contrastive_loss_against_hand_values():
    d = torch.tensor([0.2, 0.5, 1.5])
    fake = torch.tensor([0.0, 1.0, 1.0])
    # real: d^2 = 0.04; fake at 0.5: (0.99 - 0.5)^2 = 0.2401; fake beyond the margin: 0
    assert float(contrastive_loss(d, fake)) == pytest.approx((0.04 + 0.2401 + 0.0) / 3)
    assert float(contrastive_loss(d, fake, margin=2.0)) == pytest.approx((0.04 + 2.25 + 0.25) / 3)


def test_loss_sign_a_few_steps_pull_synced_pairs_together_and_push_wrong_ones_apart():
    """A synced pair's audio and video share a hidden signal; a fake's audio is another
    pair's. After a few steps the synced pairs are closer than the mismatched ones."""
    torch.manual_seed(0)
    net = tiny_net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)

    def batch(n=16):
        z = torch.randn(n, generator=g)  # the shared "speech" of each segment
        video = z.view(n, 1, 1, 1, 1) * torch.ones(n, 4, 3, 32, 32) + 0.3 * torch.randn(n, 4, 3, 32, 32, generator=g)
        audio = z.view(n, 1, 1, 1) * torch.ones(n, 1, 13, 100) + 0.3 * torch.randn(n, 1, 13, 100, generator=g)
        fake = torch.zeros(n)
        fake[n // 2:] = 1
        audio[n // 2:] = audio[n // 2:].roll(1, dims=0)  # the wrong segment's sound
        audio[n // 2:] = -audio[n // 2:]
        return video, audio, fake

    for _ in range(25):
        v, a, y = batch()
        loss = mds_loss(net(v, a), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    v, a, y = batch(32)
    with torch.no_grad():
        d = net(v, a).distance
    assert d[y == 0].mean() < d[y == 1].mean() - 0.2


def test_calibration_fit_is_monotone_and_maps_mds_to_probabilities():
    from training.av_data import fit_calibration, video_mds

    names, mds = video_mds(["a", "a", "b", "c"], [0.1, 0.3, 0.9, 1.1])
    assert names == ["a", "b", "c"] and mds.tolist() == pytest.approx([0.2, 0.9, 1.1])
    a, b = fit_calibration(np.array([0.1, 0.2, 0.3, 0.8, 0.9, 1.0]), np.array([0, 0, 0, 1, 1, 1]))
    assert a > 0 and 0.3 < b < 0.8
    net = tiny_net()
    net.calibration.copy_(torch.tensor([a, b]))
    p = net.probability(torch.tensor([0.1, 1.0]))
    assert float(p[0]) < 0.5 < float(p[1])
    a1, b1 = fit_calibration(np.array([0.4, 0.6]), np.array([0, 0]))  # one class: a fixed slope at the mean
    assert a1 == 10.0 and b1 == pytest.approx(0.5)


def test_config_ties_the_av_task_to_its_network_data_and_loss():
    cfg = mds_cfg()
    assert cfg["task"] == "av" and cfg["optimizer"]["type"] == "Adam"
    for over, msg in [({"network": "DeepFakeClassifier"}, "DissonanceNet"),
                      ({"data": {"dataset": "frames"}}, "av_segments"),
                      ({"losses": {"BinaryCrossentropy": 1}}, "not for task 'av'"),
                      ({"margin": None}, "needs 'margin'"),
                      ({"data": {"av_fake_prob": 2}}, "av_fake_prob")]:
        with pytest.raises(ConfigError, match=msg):
            mds_cfg(**over)


def test_shipped_mds_configs_follow_the_paper():
    from conftest import REPO
    from training.config import load_config

    paper = load_config(REPO / "configs" / "mds.json")
    assert (paper["optimizer"]["type"], paper["optimizer"]["learning_rate"], paper["optimizer"]["weight_decay"],
            paper["optimizer"]["batch_size"], paper["optimizer"]["schedule"]["epochs"]) == ("Adam", 1e-3, 1e-5, 8, 50)
    assert paper["model"] == {"embedding": 1024, "hidden": 4096, "audio_channels": 64, "margin": 0.99}
    assert paper["data"]["seq_len"] == 30 and paper["size"] == 224
    assert load_config(REPO / "configs" / "mds_cpu.json")["task"] == "av"


def test_fingerprint_covers_both_streams():
    from training import fingerprint

    cfg = mds_cfg()
    net = tiny_net().eval()
    record = fingerprint.make(net, cfg)
    assert len(record["logits"]) == 3  # distance, video logit, audio logit
    assert fingerprint.verify(net, cfg, record, "x") == 0.0
    with torch.no_grad():
        net.audio_head[2].bias.add_(1.0)
    with pytest.raises(fingerprint.FingerprintError):
        fingerprint.verify(net, cfg, record, "x")
    assert math.isfinite(record["logits"][0])
