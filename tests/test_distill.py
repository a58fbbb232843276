"""Distillation (training/distill.py): the teacher's fold and inputs, the loss, the ViT's local weights.

Small models at 64-96 px on a CPU; nothing is downloaded.
"""
import math

import numpy as np
import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed

from training.config import validate
from training.distill import DISTILL_KINDS, Teacher, distillation_loss, load_teacher, to_teacher_input
from training.engine import build_model, save_checkpoint
from training.losses import bce
from training.transforms import IMAGENET_MEAN, IMAGENET_STD, create_val_transforms, normalize_to_tensor
from training.zoo import create_model

LITE0 = "tf_efficientnet_lite0"
VIT = "deit_tiny_patch16_224"
HALF = (0.5, 0.5, 0.5)


def bce_by_hand(logit, y):
    p = 1 / (1 + math.exp(-logit))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def col(*values):
    return torch.tensor(values, dtype=torch.float32).view(-1, 1)


# ---------------------------------------------------------------- the loss

CLS, DIST, Y, TEACHER = (0.3, -1.2, 2.0), (1.5, 0.4, -0.7), (1.0, 0.0, 1.0), (2.0, -0.5, 0.0)


def test_hard_loss_is_deits_by_hand():
    loss = distillation_loss(col(*CLS), col(*DIST), col(*Y), col(*TEACHER))  # kind="hard", alpha=0.5
    teacher_decision = (1.0, 0.0, 0.0)  # 1[logit > 0]: a logit of exactly 0 is "real"
    expected = (0.5 * np.mean([bce_by_hand(c, y) for c, y in zip(CLS, Y)])
                + 0.5 * np.mean([bce_by_hand(d, t) for d, t in zip(DIST, teacher_decision)]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_soft_loss_by_hand():
    alpha = 0.3
    loss = distillation_loss(col(*CLS), col(*DIST), col(*Y), col(*TEACHER), kind="soft", alpha=alpha)
    soft = [1 / (1 + math.exp(-t)) for t in TEACHER]
    expected = ((1 - alpha) * np.mean([bce_by_hand(c, y) for c, y in zip(CLS, Y)])
                + alpha * np.mean([bce_by_hand(d, t) for d, t in zip(DIST, soft)]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_alpha_weighs_the_hard_loss_too():
    args = col(*CLS), col(*DIST), col(*Y), col(*TEACHER)
    only_cls = distillation_loss(*args, alpha=0.0)
    only_dist = distillation_loss(*args, alpha=1.0)
    assert only_cls.item() == pytest.approx(np.mean([bce_by_hand(c, y) for c, y in zip(CLS, Y)]), rel=1e-6)
    assert distillation_loss(*args, alpha=0.25).item() == pytest.approx(
        0.75 * only_cls.item() + 0.25 * only_dist.item(), rel=1e-6)


def test_criterion_applies_to_the_class_token_only():
    calls = []

    def smoothing(logits, target):  # a label-smoothed BCE, standing in for the config's losses
        calls.append((logits, target))
        return bce(logits, target * 0.8 + 0.1)

    args = col(*CLS), col(*DIST), col(*Y), col(*TEACHER)
    loss = distillation_loss(*args, criterion=smoothing)
    assert len(calls) == 1 and calls[0][0] is args[0] and calls[0][1] is args[2]
    smoothed_y = [y * 0.8 + 0.1 for y in Y]
    expected = (0.5 * np.mean([bce_by_hand(c, y) for c, y in zip(CLS, smoothed_y)])
                + 0.5 * np.mean([bce_by_hand(d, t) for d, t in zip(DIST, (1.0, 0.0, 0.0))]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_balanced_distillation_term_balances_by_the_ground_truth():
    """Heo et al.: loss = (fake_loss + real_loss) / 2, each the class's mean of
    1/2 BCE(cls, y) + 1/2 BCE(dist, sigmoid(teacher)) (here (1 - alpha) on the class term,
    alpha on the distillation term), the classes the ground truth's (not the teacher's);
    labels clipped to [0.01, 0.99] for the class term only."""
    from training.losses import WeightedLoss

    cls, dist, y, teacher = (0.3, -1.2, 2.0, 0.5), (1.5, 0.4, -0.7, 0.2), (1.0, 0.0, 1.0, 1.0), (-2.0, 3.0, 0.0, 1.0)
    criterion = WeightedLoss({"BalancedBinaryCrossentropy": 1}, label_smoothing=0.01)
    target = col(*y)
    loss = distillation_loss(col(*cls), col(*dist), target, col(*teacher), kind="soft", alpha=0.5,
                             criterion=criterion,
                             dist_criterion=lambda logit, soft: criterion.against(logit, soft, target))
    soft = [1 / (1 + math.exp(-t)) for t in teacher]
    smoothed = [min(max(v, 0.01), 0.99) for v in y]

    def per_class(fake):
        idx = [i for i, v in enumerate(y) if (v > 0.5) == fake]
        return (0.5 * np.mean([bce_by_hand(cls[i], smoothed[i]) for i in idx])
                + 0.5 * np.mean([bce_by_hand(dist[i], soft[i]) for i in idx]))

    assert loss.item() == pytest.approx((per_class(True) + per_class(False)) / 2, rel=1e-6)
    # the teacher's soft targets do not choose the classes: teacher 3.0 on a REAL stays REAL
    plain = WeightedLoss({"BinaryCrossentropy": 1})
    assert plain.against(col(*dist), col(*soft), target).item() == pytest.approx(
        np.mean([bce_by_hand(d, t) for d, t in zip(dist, soft)]), rel=1e-6)
    with pytest.raises(ValueError, match="not a classification loss"):
        WeightedLoss({"RMSE": 1}).against(col(*dist), col(*soft), target)


def test_unknown_kind_lists_the_choices():
    with pytest.raises(ValueError) as err:
        distillation_loss(col(0.0), col(0.0), col(1.0), col(0.0), kind="medium")
    assert "medium" in str(err.value) and all(k in str(err.value) for k in DISTILL_KINDS)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(col(0.0), col(0.0), col(1.0), col(0.0), alpha=1.5)
    with pytest.raises(ValueError, match="teacher logits"):
        distillation_loss(col(0.0, 1.0), col(0.0, 1.0), col(1.0, 0.0), col(0.0))


@pytest.mark.parametrize("kind", DISTILL_KINDS)
def test_no_gradient_reaches_the_teacher(kind):
    cls_logit, dist_logit = col(*CLS).requires_grad_(), col(*DIST).requires_grad_()
    teacher_logit = col(*TEACHER).requires_grad_()
    distillation_loss(cls_logit, dist_logit, col(*Y), teacher_logit, kind=kind).backward()
    assert teacher_logit.grad is None
    assert cls_logit.grad is not None and dist_logit.grad is not None


# ---------------------------------------------------------------- the teacher's inputs

def face_crop(h=180, w=140):
    """A non-square face crop (so the transforms pad it) from skimage's astronaut photo."""
    from skimage.data import astronaut

    return np.ascontiguousarray(astronaut()[20:20 + h, 160:160 + w])


def own_val_input(crop, size, mean, std):
    return normalize_to_tensor(create_val_transforms(size)(image=crop)["image"], mean, std)[None]


def to_pixels(x, mean, std):
    return x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)


@pytest.mark.parametrize("crop_shape, student_size, teacher_size", [
    ((180, 140), 96, 64),   # shrink: antialiased
    ((180, 140), 96, 128),  # enlarge
    ((120, 200), 64, 96),   # landscape crop, padded top and bottom
])
def test_teacher_sees_what_its_own_val_transform_makes(crop_shape, student_size, teacher_size):
    crop = face_crop(*crop_shape)
    student = own_val_input(crop, student_size, HALF, HALF)
    got = to_teacher_input(student, HALF, HALF, teacher_size, IMAGENET_MEAN, IMAGENET_STD)
    want = own_val_input(crop, teacher_size, IMAGENET_MEAN, IMAGENET_STD)
    assert got.shape == want.shape == (1, 3, teacher_size, teacher_size) and got.dtype == torch.float32
    diff = (to_pixels(got, IMAGENET_MEAN, IMAGENET_STD) - to_pixels(want, IMAGENET_MEAN, IMAGENET_STD)).abs()
    assert diff.mean().item() < 0.05, diff.mean().item()
    # feeding the teacher the student's tensor as is would be far off (size aside: normalisation)
    naive = to_teacher_input(student, IMAGENET_MEAN, IMAGENET_STD, teacher_size, IMAGENET_MEAN, IMAGENET_STD)
    assert (naive - want).abs().mean() > 5 * (got - want).abs().mean()


def test_black_padding_stays_black_in_the_teacher_normalisation():
    student_black = torch.full((2, 3, 96, 96), -1.0)  # pixel 0 under mean = std = 0.5
    got = to_teacher_input(student_black, HALF, HALF, 64, IMAGENET_MEAN, IMAGENET_STD)
    want = (-torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)).view(1, 3, 1, 1).expand_as(got)
    torch.testing.assert_close(got, want)


def test_same_size_and_normalisation_is_the_identity():
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(to_teacher_input(x, IMAGENET_MEAN, IMAGENET_STD, 64, IMAGENET_MEAN, IMAGENET_STD), x)
    with pytest.raises(ValueError, match="square"):
        to_teacher_input(torch.randn(2, 3, 64, 48), HALF, HALF, 64, HALF, HALF)


class Recorder(torch.nn.Module):
    """A stand-in teacher: records its input, returns its mean as the logit."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.seen = None

    def forward(self, x):
        self.seen = x
        return (x.mean(dim=(1, 2, 3)) * self.scale).view(-1, 1)


def test_teacher_call_converts_and_runs_frozen_without_grad():
    recorder = Recorder().train()
    teacher = Teacher(recorder, 64, IMAGENET_MEAN, IMAGENET_STD)
    assert not recorder.training and not recorder.scale.requires_grad
    teacher.train()  # the engine may call train()/eval() on it: it stays frozen
    assert not recorder.training
    x = torch.randn(3, 3, 96, 96, requires_grad=True)
    logits = teacher(x, HALF, HALF)
    assert logits.shape == (3, 1) and logits.dtype == torch.float32 and not logits.requires_grad
    torch.testing.assert_close(recorder.seen, teacher.inputs(x, HALF, HALF).detach())
    assert recorder.seen.shape == (3, 3, 64, 64)


# ---------------------------------------------------------------- load_teacher

def teacher_cfg(network="DeepFakeClassifier", **over):
    cfg = {"network": network, "encoder": LITE0, "pretrained": False, "size": 64,
           "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}}
    cfg.update(over)
    return validate(cfg)


def save_teacher(path, extra, network="DeepFakeClassifier", **over):
    cfg = teacher_cfg(network, **over)
    torch.manual_seed(0)
    model = build_model(cfg)
    save_checkpoint(path, model, cfg, 0, {}, extra)
    return model


def test_load_teacher_freezes_it_with_its_own_size_and_normalisation(tmp_path):
    path = tmp_path / "teacher_fold1_best.pt"
    model = save_teacher(path, {"seed": 0, "fold": 1}).eval()
    teacher = load_teacher(path, fold=1, device="cpu")
    assert teacher.fold == 1 and teacher.size == 64
    assert teacher.mean == pytest.approx(IMAGENET_MEAN) and teacher.std == pytest.approx(IMAGENET_STD)
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        want = model(to_teacher_input(x, HALF, HALF, 64, IMAGENET_MEAN, IMAGENET_STD))
    torch.testing.assert_close(teacher(x, HALF, HALF), want)


def test_a_teacher_of_another_fold_is_refused(tmp_path):
    path = tmp_path / "teacher_fold0_best.pt"
    save_teacher(path, {"seed": 0, "fold": 0})
    with pytest.raises(ValueError) as err:
        load_teacher(path, fold=1)
    message = str(err.value)
    assert "fold 0" in message and "fold 1" in message and str(path) in message


def test_a_teacher_without_a_fold_is_refused_unless_allowed(tmp_path):
    path = tmp_path / "teacher.pt"
    save_teacher(path, {})
    with pytest.raises(ValueError, match="no validation fold"):
        load_teacher(path, fold=2)
    teacher = load_teacher(path, fold=2, allow_unknown_fold=True)
    assert teacher.fold is None and not teacher.model.training


def test_a_teacher_that_frames_faces_differently_is_refused(tmp_path):
    path = tmp_path / "teacher.pt"
    save_teacher(path, {"fold": 0})
    student = teacher_cfg("DeepFakeClassifierDistill", size=96, distill={"teacher": str(path)})
    assert load_teacher(path, fold=0, student_cfg=student).size == 64  # another size is a resize away
    for over in ({"margin": 0.5}, {"data": {"resize": "shortest"}}):
        with pytest.raises(ValueError, match="frames faces differently") as err:
            load_teacher(path, fold=0, student_cfg=teacher_cfg("DeepFakeClassifierDistill", size=96,
                                                               distill={"teacher": "t.pt"}, **over))
        assert str(path) in str(err.value)


def test_a_sequence_teacher_is_refused(tmp_path):
    path = tmp_path / "seq.pt"
    save_teacher(path, {"fold": 0}, network="DeepFakeClassifierSeq3D", data={"dataset": "sequences", "seq_len": 2})
    with pytest.raises(ValueError, match="frame model"):
        load_teacher(path, fold=0)


def test_one_distillation_step_trains_the_student_and_not_the_teacher(tmp_path):
    path = tmp_path / "teacher.pt"
    save_teacher(path, {"fold": 0})
    teacher = load_teacher(path, fold=0)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    torch.manual_seed(0)
    student = create_model("DeepFakeClassifierDistill", LITE0, vit=VIT, size=96).train()
    x, y = torch.randn(2, 3, 96, 96), col(1.0, 0.0)
    cls_logit, dist_logit = student(x)
    loss = distillation_loss(cls_logit, dist_logit, y, teacher(x, HALF, HALF))
    loss.backward()
    assert torch.isfinite(loss) and student.head_dist.weight.grad is not None
    after = teacher.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included


# ---------------------------------------------------------------- Heo et al.'s architecture

VIT32 = "vit_small_patch32_224"  # a patch-32 ViT: its 2 x 2 grid at 64 px is Lite0's (stride 32)


def test_fused_tokens_pool_each_patch_with_its_cnn_cell_as_heo_et_al():
    """facebook_deit.py: x = cat((cnn features, patch embeddings), dim=2), AdaptiveAvgPool2d
    ((None, D)), + pos_embed for [cls, fused]; the distillation token has none."""
    torch.manual_seed(0)
    model = create_model("DeepFakeClassifierDistill", LITE0, vit=VIT32, size=64, tokens="fused").eval()
    assert not hasattr(model, "cnn_proj") and not hasattr(model, "cnn_pos_embed")
    vit = model.vit
    vit.blocks, vit.norm = torch.nn.Identity(), torch.nn.Identity()  # the transformer's input, as it is
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        seq = model.tokens(x)
        cells = model.encoder(x).flatten(2).transpose(1, 2)  # (2, 4, 1280)
        patches = vit.patch_embed(x)  # (2, 4, 384)
        fused = torch.nn.AdaptiveAvgPool2d((None, vit.embed_dim))(torch.cat([cells, patches], dim=2))
    assert seq.shape == (2, 2 + 4, vit.embed_dim)
    torch.testing.assert_close(seq[:, 2:], fused + vit.pos_embed[:, 1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(seq[:, 0], (vit.cls_token + vit.pos_embed[:, :1])[:, 0].expand(2, -1))
    torch.testing.assert_close(seq[:, 1], model.dist_token[:, 0].expand(2, -1))


def test_fused_tokens_need_the_patch_grid_of_the_cnn():
    with pytest.raises(ValueError, match="patch grid"):
        create_model("DeepFakeClassifierDistill", LITE0, vit=VIT, size=64, tokens="fused")  # 4x4 patches, 2x2 cells
    with pytest.raises(ValueError, match="tokens must be one of"):
        create_model("DeepFakeClassifierDistill", LITE0, vit=VIT, size=64, tokens="mixed")
    with pytest.raises(ValueError, match="output must be one of"):
        create_model("DeepFakeClassifierDistill", LITE0, vit=VIT, size=64, output="cls")


def test_shared_head_and_the_distillation_output():
    """Heo et al.: one fc reads both tokens; validation and prediction use the distillation
    token's logit. DeiT: two heads, the mean of both logits."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    shared = create_model("DeepFakeClassifierDistill", LITE0, vit=VIT, size=64, shared_head=True, output="dist")
    assert not hasattr(shared, "head_dist") and not any(k.startswith("head_dist") for k in shared.state_dict())
    shared.eval()
    with torch.no_grad():
        seq = shared.tokens(x)
        out = shared(x)
    torch.testing.assert_close(out, shared.head(seq[:, 1]))
    shared.train()  # BatchNorm on batch statistics: the same batch gives the same tokens
    with torch.no_grad():
        seq = shared.tokens(x)
        cls_logit, dist_logit = shared(x)
    torch.testing.assert_close(cls_logit, shared.head(seq[:, 0]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dist_logit, shared.head(seq[:, 1]), rtol=1e-5, atol=1e-5)
    deit = create_model("DeepFakeClassifierDistill", LITE0, vit=VIT, size=64).eval()
    with torch.no_grad():
        seq = deit.tokens(x)
        torch.testing.assert_close(deit(x), (deit.head(seq[:, 0]) + deit.head_dist(seq[:, 1])) / 2)


def test_drop_path_reaches_the_cnn_and_the_vit():
    from timm.layers import DropPath

    model = create_model("DeepFakeClassifierDistill", LITE0, vit=VIT, size=64, drop_path_rate=0.2)
    vit_rates = [m.drop_prob for m in model.vit.modules() if isinstance(m, DropPath)]
    cnn_rates = [m.drop_prob for m in model.encoder.modules() if isinstance(m, DropPath)]
    assert vit_rates and max(vit_rates) == pytest.approx(0.2) and cnn_rates and max(cnn_rates) > 0
    cfg = validate({"network": "DeepFakeClassifierDistill", "encoder": LITE0, "pretrained": False, "size": 64,
                    "drop_path_rate": 0.2, "model": {"vit": VIT}, "distill": {"teacher": "t.pt"}})
    assert any(isinstance(m, DropPath) for m in build_model(cfg).vit.modules())  # the config's key reaches it


# ---------------------------------------------------------------- the ViT's weights

def vit_file(tmp_path, wrap=None, head=True, seed=3):
    torch.manual_seed(seed)
    state = timm.create_model(VIT, pretrained=False).state_dict()  # 224 px, 1000-class head
    assert "head.weight" in state
    if not head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    path = tmp_path / "deit_tiny.pth"
    torch.save({wrap: state} if wrap else state, path)
    return path, state


@pytest.mark.parametrize("wrap, head", [(None, True), ("model", False), ("state_dict", True)])
def test_vit_pretrained_file_loads_with_resampled_position_embeddings(tmp_path, wrap, head):
    path, state = vit_file(tmp_path, wrap, head)
    torch.manual_seed(0)
    model = create_model("DeepFakeClassifierDistill", LITE0, vit=VIT, size=64, vit_pretrained=str(path))
    vit = model.vit.state_dict()
    blocks = [k for k in state if k.startswith("blocks.")]
    assert blocks and all(torch.equal(vit[k], state[k]) for k in blocks)
    for k in ("cls_token", "patch_embed.proj.weight", "norm.weight"):
        assert torch.equal(vit[k], state[k])
    assert vit["pos_embed"].shape == (1, 1 + 4 * 4, 192)
    torch.testing.assert_close(vit["pos_embed"], resample_abs_pos_embed(state["pos_embed"], [4, 4], num_prefix_tokens=1))
    assert vit["pos_embed"][0, 0].equal(state["pos_embed"][0, 0])  # the class token's position is kept
    model.train()(torch.randn(1, 3, 64, 64))


def test_vit_pretrained_file_at_its_own_size_loads_as_is(tmp_path):
    path, state = vit_file(tmp_path)
    model = create_model("DeepFakeClassifierDistill", LITE0, vit=VIT, size=224, vit_pretrained=path)
    assert torch.equal(model.vit.pos_embed.detach(), state["pos_embed"])


def test_vit_file_of_another_architecture_names_the_keys(tmp_path):
    torch.manual_seed(0)
    state = timm.create_model("deit_small_patch16_224", pretrained=False, depth=2).state_dict()
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "small.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        create_model("DeepFakeClassifierDistill", LITE0, vit=VIT, size=64, vit_pretrained=path)
    message = str(err.value)
    assert "missing keys: blocks.10." in message or "blocks.2." in message  # deit_tiny has 12 blocks
    assert "extra.weight" in message and "wrong shapes" in message and str(path) in message
    with pytest.raises(FileNotFoundError):
        create_model("DeepFakeClassifierDistill", LITE0, vit=VIT, size=64, vit_pretrained=tmp_path / "nope.pth")


def test_vit_download_follows_the_arguments(monkeypatch):
    """vit_pretrained=None keeps the old behaviour (download iff pretrained is True); nothing is downloaded here."""
    import training.zoo.distill as distill

    calls = []
    real_create = timm.create_model

    def create(name, pretrained=False, **kwargs):
        calls.append(pretrained)
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(distill.timm, "create_model", create)
    monkeypatch.setattr(distill, "create_encoder", lambda name, pretrained: real_create(
        name, pretrained=False, num_classes=0, global_pool=""))
    for cnn, vit, expected in [(False, None, False), (True, None, True), ("cnn.pth", None, False),
                               (True, False, False), (False, True, True)]:
        calls.clear()
        create_model("DeepFakeClassifierDistill", LITE0, pretrained=cnn, vit=VIT, size=64, vit_pretrained=vit)
        assert calls == [expected], (cnn, vit, calls)
    with pytest.raises(ValueError, match="vit_pretrained"):
        create_model("DeepFakeClassifierDistill", LITE0, vit=VIT, size=64, vit_pretrained=3)
