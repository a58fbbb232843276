"""The training model zoo: registry, learning, Seq3D == 2D at start, checkpoints, offline weights.

Small encoders at 64-128 px keep this fast on a CPU; nothing is downloaded.
"""
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models._efficientnet_blocks import InvertedResidual

from training.zoo import (MODELS, DeepFakeClassifier, DeepFakeClassifierDistill, DeepFakeClassifierSeq3D,
                          TemporalConv3d, create_model, lite0_weights_path, load_encoder_weights)

LITE0 = "tf_efficientnet_lite0"  # no squeeze-excitation
B0 = "efficientnet_b0"  # InvertedResidual blocks with squeeze-excitation
VIT = "deit_tiny_patch16_224"


def seeded(seed, build, *args, **kwargs):
    torch.manual_seed(seed)
    return build(*args, **kwargs)


def calibrate_batchnorm(model, batch, seed=1):
    """Give a random-init encoder BN statistics from data and non-zero gammas.

    Fresh timm EfficientNets zero the last BN of each residual branch and their BN running
    stats are 0/1, so in eval mode their output barely depends on the input; comparisons
    between models would then pass trivially.
    """
    g = torch.Generator().manual_seed(seed)
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.momentum = 1.0
            bn.weight.data = torch.rand(bn.num_features, generator=g) + 0.5
    model.train()
    with torch.no_grad():
        model(batch)
    return model.eval()


def randomize_batchnorm(model, seed=1):
    """Deterministic, input-independent random BN parameters and statistics (same for same module order)."""
    g = torch.Generator().manual_seed(seed)
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            n = bn.num_features
            bn.weight.data = torch.rand(n, generator=g) + 0.5
            bn.bias.data = torch.randn(n, generator=g) * 0.1
            bn.running_mean.data = torch.randn(n, generator=g) * 0.1
            bn.running_var.data = torch.rand(n, generator=g) + 0.5
    return model.eval()


def still_clip(frames, num_frames):
    """(B, 3, H, W) -> (B, T, 3, H, W), every frame the same."""
    return frames[:, None].expand(-1, num_frames, -1, -1, -1).contiguous()


# ---------------------------------------------------------------- registry

@pytest.mark.parametrize("network, kwargs", [
    ("DeepFakeClassifier", {}),
    ("DeepFakeClassifierSeq3D", {"seq_len": 3}),
    ("DeepFakeClassifierDistill", {"vit": VIT, "size": 64}),
])
def test_registry_builds_each_network(network, kwargs):
    model = create_model(network, LITE0, dropout=0.2, **kwargs)
    assert type(model) is MODELS[network]
    assert model.dropout.p == 0.2


def test_unknown_network_lists_known_ones():
    with pytest.raises(ValueError) as err:
        create_model("ResNetOfDoom", LITE0)
    for name in MODELS:
        assert name in str(err.value)
    assert "ResNetOfDoom" in str(err.value)


# ---------------------------------------------------------------- learning

def bce(logits, target):
    return F.binary_cross_entropy_with_logits(logits, target)


def distill_loss(outputs, target, soft_target):
    cls_logit, dist_logit = outputs
    return 0.5 * bce(cls_logit, target) + 0.5 * bce(dist_logit, soft_target)


@pytest.mark.parametrize("network, inputs, kwargs", [
    ("DeepFakeClassifier", (4, 3, 64, 64), {}),
    ("DeepFakeClassifierSeq3D", (2, 3, 3, 64, 64), {"seq_len": 3}),
    ("DeepFakeClassifierDistill", (4, 3, 64, 64), {"size": 64}),
])
def test_a_few_steps_lower_the_loss(network, inputs, kwargs):
    torch.manual_seed(0)
    model = create_model(network, LITE0, dropout=0.0, **kwargs).train()
    x = torch.randn(inputs)
    y = torch.tensor([[1.0], [0.0], [1.0], [0.0]])[: inputs[0]]
    soft = torch.tensor([[0.9], [0.2], [0.7], [0.1]])[: inputs[0]]  # stands in for sigmoid(teacher)

    def loss_of(out):
        return distill_loss(out, y, soft) if network == "DeepFakeClassifierDistill" else bce(out, y.expand_as(out))

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        out = model(x)
        loss = loss_of(out)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = loss_of(model(x)).item()
    assert np.isfinite(losses).all()
    assert final < losses[0], (losses, final)


# ---------------------------------------------------------------- Seq3D

def test_seq3d_has_a_temporal_conv_in_every_inverted_residual():
    model2d = seeded(0, DeepFakeClassifier, B0)
    seq = DeepFakeClassifierSeq3D.from_2d(model2d, seq_len=4)
    blocks2d = [m for m in model2d.encoder.modules() if isinstance(m, InvertedResidual)]
    blocks3d = [m for m in seq.encoder.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks2d) == len(blocks3d) == len(seq.temporal_convs()) == 15  # b0: 16 blocks, the first has no expansion
    for b2, b3 in zip(blocks2d, blocks3d):
        conv = b3.conv_pw
        assert isinstance(conv, TemporalConv3d) and conv.kernel_size == (3, 1, 1)
        assert (conv.bias is None) == (b2.conv_pw.bias is None)
        w2d = b2.conv_pw.weight  # (O, I, 1, 1)
        for tap in range(3):
            torch.testing.assert_close(conv.weight[:, :, tap], w2d / 3)


def test_seq3d_from_2d_equals_2d_on_a_still_clip():
    model2d = calibrate_batchnorm(seeded(0, DeepFakeClassifier, B0), torch.randn(8, 3, 64, 64))
    seq = DeepFakeClassifierSeq3D.from_2d(model2d, seq_len=4).eval()
    frames = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model2d(frames)
        assert expected.shape == (2, 1) and expected.dtype == torch.float32
        assert (expected[0] - expected[1]).abs() > 1e-3  # the comparison is not trivial
        out = seq(still_clip(frames, 4))
        assert out.shape == (2, 4) and out.dtype == torch.float32  # one logit per frame (NTech)
        torch.testing.assert_close(out, expected.expand(2, 4), atol=1e-5, rtol=0)
        torch.testing.assert_close(seq(still_clip(frames, 2)), expected.expand(2, 2), atol=1e-5, rtol=0)


def test_seq3d_equals_2d_when_built_from_the_same_seed():
    model2d = randomize_batchnorm(seeded(0, create_model, "DeepFakeClassifier", LITE0))
    seq = randomize_batchnorm(seeded(0, create_model, "DeepFakeClassifierSeq3D", LITE0, seq_len=3))
    frames = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model2d(frames)
        assert (expected[0] - expected[1]).abs() > 1e-3
        torch.testing.assert_close(seq(still_clip(frames, 3)), expected.expand(2, 3), atol=1e-5, rtol=0)


def test_seq3d_equals_2d_when_built_from_the_same_weight_file():
    path = lite0_weights_path()
    model2d = seeded(0, create_model, "DeepFakeClassifier", LITE0, pretrained=path).eval()
    seq = seeded(0, create_model, "DeepFakeClassifierSeq3D", LITE0, pretrained=path, seq_len=3).eval()
    frames = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(seq(still_clip(frames, 3)), model2d(frames).expand(2, 3), atol=1e-5, rtol=0)


def test_seq3d_mixes_frames_only_through_its_temporal_convs():
    path = lite0_weights_path()
    model2d = seeded(0, create_model, "DeepFakeClassifier", LITE0, pretrained=path).eval()
    seq = DeepFakeClassifierSeq3D.from_2d(model2d, seq_len=4).eval()
    clip = torch.randn(2, 4, 3, 64, 64)
    with torch.no_grad():
        # frame order matters: a mean of per-frame features would not see a shuffle
        assert not torch.allclose(seq(clip), seq(clip[:, [2, 0, 3, 1]]), atol=1e-4)
        # with all weight on the centre tap each frame is on its own: the 2D model's logit per frame
        for conv in seq.temporal_convs():
            centre = conv.weight[:, :, 1] * 3
            conv.weight.zero_()
            conv.weight[:, :, 1] = centre
        per_frame = model2d(clip.flatten(0, 1)).view(2, 4)
        torch.testing.assert_close(seq(clip), per_frame, atol=1e-5, rtol=0)


def test_drop_path_rate_reaches_the_encoder_and_acts_only_in_training():
    model = seeded(0, create_model, "DeepFakeClassifier", LITE0, drop_path_rate=0.2)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2, abs=0.02)  # timm ramps it up to the rate
    assert not [m for m in seeded(0, create_model, "DeepFakeClassifier", LITE0).modules()
                if type(m).__name__ == "DropPath"]
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        seq = DeepFakeClassifierSeq3D.from_2d(model, seq_len=2)
        assert seq.drop_path_rate == 0.2


def test_seq3d_rejects_a_batch_that_is_not_whole_clips():
    conv = TemporalConv3d(4, 8, num_frames=3)
    with pytest.raises(ValueError, match="3-frame clips"):
        conv(torch.randn(4, 4, 2, 2))


# ---------------------------------------------------------------- Distill

def test_distill_returns_both_heads_in_training_and_their_mean_in_eval():
    model = seeded(0, create_model, "DeepFakeClassifierDistill", LITE0, vit=VIT, size=96, dropout=0.1)
    x = torch.randn(2, 3, 96, 96)
    out = model.train()(x)
    assert isinstance(out, tuple) and len(out) == 2
    assert all(o.shape == (2, 1) and o.dtype == torch.float32 for o in out)
    model.eval()
    with torch.no_grad():
        tokens = model.tokens(x)
        assert tokens.shape == (2, 2 + (96 // 16) ** 2 + (96 // 32) ** 2, model.vit.embed_dim)
        cls_logit, dist_logit = model.head(tokens[:, 0]), model.head_dist(tokens[:, 1])
        mean = model(x)
    assert mean.shape == (2, 1)
    torch.testing.assert_close(mean, (cls_logit + dist_logit) / 2)
    with pytest.raises(ValueError, match="96x96"):
        model(torch.randn(1, 3, 64, 64))


# ---------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("network, inputs, kwargs", [
    ("DeepFakeClassifier", (2, 3, 64, 64), {}),
    ("DeepFakeClassifierSeq3D", (2, 2, 3, 64, 64), {"seq_len": 2}),
    ("DeepFakeClassifierDistill", (2, 3, 64, 64), {"size": 64}),
])
def test_state_dict_round_trip(tmp_path, network, inputs, kwargs):
    model = randomize_batchnorm(seeded(0, create_model, network, LITE0, **kwargs))
    torch.save(model.state_dict(), tmp_path / "model.pt")
    fresh = seeded(1, create_model, network, LITE0, **kwargs).eval()
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), strict=True)
    x = torch.randn(inputs)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), atol=0, rtol=0)


# ---------------------------------------------------------------- offline weights

def imagenet_input(model, size=224):
    """skimage's cat photo, centre-cropped, resized and normalised as the model's timm config says."""
    from skimage.data import chelsea
    from skimage.transform import resize

    image = chelsea()
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = resize(image[top:top + side, left:left + side], (size, size), anti_aliasing=True)  # float in [0, 1]
    cfg = model.pretrained_cfg
    image = (image - np.array(cfg["mean"])) / np.array(cfg["std"])
    return torch.from_numpy(image.transpose(2, 0, 1)).float()[None]


def test_lite0_file_classifies_a_cat_as_a_cat():
    model = timm.create_model(LITE0, pretrained=False, num_classes=1000)
    load_encoder_weights(model, lite0_weights_path())
    with torch.no_grad():
        top1 = model.eval()(imagenet_input(model)).argmax(1).item()
    assert 281 <= top1 <= 285, top1  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_checkpoints_sharing_a_file_name_get_distinct_names():
    from inference.predictor import model_names

    assert model_names(["w/a.pt", "w/b.pt"]) == ["a", "b"]
    assert model_names(["s0/m_best.pt", "s1/m_best.pt", "s1/x.pt"]) == ["s0/m_best", "s1/m_best", "x"]
    assert model_names(["a/m.pt", "b/a/m.pt", "c.pt"]) == ["a/m#1", "a/m#2", "c"]
    here = Path.cwd().name  # a bare file name: the folder it resolves to
    assert model_names(["m.pt", "x/m.pt"]) == [f"{here}/m", "x/m"]


def test_prediction_precision_follows_the_device_and_the_cpu(monkeypatch):
    import inference.predictor as predictor
    from inference.predictor import amp_dtype

    assert isinstance(predictor.cpu_bf16_supported(), bool)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for native, want in ((True, torch.bfloat16), (False, None)):  # auto: bf16 only where the CPU has it
        monkeypatch.setattr(predictor, "cpu_bf16_supported", lambda native=native: native)
        assert amp_dtype(cpu, "auto") == want
        assert amp_dtype(cpu, "on") == torch.bfloat16
        assert amp_dtype(cpu, "off") is None
    for native, want in ((True, torch.bfloat16), (False, torch.float16)):  # an older GPU: fp16, not emulated bf16
        monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                            lambda including_emulation=True, native=native: native or including_emulation)
        assert amp_dtype(cuda, "auto") == want
    assert amp_dtype(cuda, "off") is None
    with pytest.raises(ValueError, match="auto, on, off"):
        amp_dtype(cpu, "bf16")


def test_lite0_predicts_the_same_class_in_bf16_on_a_cpu():
    """6_predict's CPU autocast (`--amp`): the pretrained Lite0, channels-last and batch
    norms folded as prediction loads it, gives nearly the same class probabilities in bf16."""
    from inference.fuse import fold_batchnorm
    from training.engine import to_channels_last

    model = timm.create_model(LITE0, pretrained=False, num_classes=1000)
    load_encoder_weights(model, lite0_weights_path())
    model.eval()
    assert fold_batchnorm(model) > 0
    model = to_channels_last(model)
    x = imagenet_input(model).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        p32 = model(x).softmax(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
    assert logits.dtype == torch.bfloat16  # the autocast did run the network in bf16
    p16 = logits.float().softmax(1)
    assert p16.argmax(1).item() == p32.argmax(1).item()
    assert set(p16.topk(3).indices[0].tolist()) == set(p32.topk(3).indices[0].tolist())
    assert (p16 - p32).abs().max().item() < 0.015  # 0.0045 measured (top-1 0.405 -> 0.403)


@pytest.mark.parametrize("as_str", [False, True])
def test_create_model_loads_the_lite0_file(as_str):
    path = lite0_weights_path()
    model = create_model("DeepFakeClassifier", LITE0, pretrained=str(path) if as_str else path)
    file_tensors = [t for k, t in torch.load(path, map_location="cpu", weights_only=True).items()
                    if not k.startswith("_fc.")]
    encoder_tensors = list(model.encoder.state_dict().values())
    assert len(file_tensors) == len(encoder_tensors)
    for a, b in zip(file_tensors, encoder_tensors):
        assert torch.equal(a, b)


def test_timm_named_file_wrapped_in_state_dict_loads_by_name(tmp_path):
    source = randomize_batchnorm(seeded(0, timm.create_model, LITE0, num_classes=1000))
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, tmp_path / "encoder.pth")
    model = seeded(1, create_model, "DeepFakeClassifier", LITE0, pretrained=tmp_path / "encoder.pth")
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("classifier.")}
    for key, tensor in model.encoder.state_dict().items():
        assert torch.equal(tensor, expected[key]), key


def test_wrong_weight_file_is_an_error(tmp_path):
    wrong = {f"layer{i}.weight": torch.randn(i + 2, 3) for i in range(10)}
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="do not match"):
        create_model("DeepFakeClassifier", LITE0, pretrained=tmp_path / "wrong.pth")
    # same count, one shape off: positional mapping must refuse too
    lite0 = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    lite0["_conv_stem.weight"] = torch.randn(16, 3, 3, 3)
    torch.save(lite0, tmp_path / "off_by_one_shape.pth")
    with pytest.raises(ValueError, match="_conv_stem.weight"):
        create_model("DeepFakeClassifier", LITE0, pretrained=tmp_path / "off_by_one_shape.pth")
    # the lite0 file does not fit another architecture
    with pytest.raises(ValueError):
        create_model("DeepFakeClassifier", B0, pretrained=lite0_weights_path())


# ---------------------------------------------------------------- prediction speed-up

@pytest.mark.parametrize("config, encoder", [("lite0_cpu", None), ("lite0_seq3d_cpu", None), ("mos_cpu", None),
                                             ("lite0_cpu", "tf_efficientnet_b0"), ("mds_sync_cpu", None),
                                             ("deit_distill_cpu", None)])
def test_folding_batchnorm_keeps_the_logits(config, encoder):
    """inference.fuse.fold_batchnorm (6_predict): every batch norm of a timm EfficientNet
    (stem, head, each block's; the sequence model's temporal convs included; B0/B7's
    squeeze-excitation and TF 'same' padding too; the dissonance model's frozen per-frame
    Lite0) is folded into the convolution before it, in place, and the model computes the
    same logits (channels-last weights kept). A model without one (DeiT) is left alone."""
    from timm.models.efficientnet import EfficientNet

    from inference.fuse import fold_batchnorm
    from training import fingerprint
    from training.config import load_config
    from training.engine import REPO_ROOT, build_model

    cfg = load_config(REPO_ROOT / "configs" / f"{config}.json")
    if encoder:
        cfg["encoder"] = encoder
    model = randomize_batchnorm(seeded(0, build_model, cfg, pretrained=False))
    before = fingerprint.logits(model, cfg)

    def efficientnet_norms():
        return [m for net in model.modules() if isinstance(net, EfficientNet)
                for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    norms = len(efficientnet_norms())
    assert norms > 10 or config == "deit_distill_cpu"
    assert fold_batchnorm(model) == norms
    assert not efficientnet_norms()
    assert config == "deit_distill_cpu" or any(
        m.weight.dim() == 4 and not m.weight.is_contiguous() for m in model.modules()
        if isinstance(m, torch.nn.Conv2d))  # still channels-last
    np.testing.assert_allclose(fingerprint.logits(model, cfg), before, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(model.train())


def test_prediction_runs_a_model_unfolded_when_folding_would_change_it(tmp_path, monkeypatch):
    """load_models checks the folded model against the unfolded one's fingerprint logits; a
    fold that changes them (here: norms paired with the wrong convolutions, as a timm that
    reordered its blocks would) is undone by reloading the checkpoint, with a warning."""
    import inference.fuse as fuse
    from inference.predictor import load_models
    from training import fingerprint
    from training.config import load_config
    from training.engine import REPO_ROOT, build_model, save_checkpoint

    cfg = load_config(REPO_ROOT / "configs" / "lite0_cpu.json")
    cfg["pretrained"] = False
    model = randomize_batchnorm(seeded(0, build_model, cfg))
    save_checkpoint(tmp_path / "m.pt", model, cfg, 0, {})
    expected = fingerprint.logits(model, cfg)

    [good] = load_models([tmp_path / "m.pt"], torch.device("cpu"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in good.model.modules())
    real_pairs = fuse._pairs
    monkeypatch.setattr(fuse, "_pairs", lambda: {cls: tuple((c, {"bn1": "bn2", "bn2": "bn1"}.get(b, b)) for c, b in p)
                                                 for cls, p in real_pairs().items()})
    with pytest.warns(UserWarning, match="runs unfolded"):
        [bad] = load_models([tmp_path / "m.pt"], torch.device("cpu"))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bad.model.modules())
    for m in (good, bad):
        np.testing.assert_allclose(fingerprint.logits(m.model, m.cfg), expected, atol=1e-4, rtol=1e-4)
