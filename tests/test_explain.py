"""Explanation pages (inference/explain.py): Grad-CAM and attention rollout against hand
computations, the face choice, and page names. The pages end to end, in a real browser,
are in test_predict.py."""
import numpy as np
import timm
import torch

from inference.explain import (attention_rollout, block_attention, failure_page, gradcam, overlay, page_name,
                               pick_faces, render_page)
from training.zoo.classifiers import DeepFakeClassifier, DeepFakeClassifierSeq3D
from training.zoo.distill import DeepFakeClassifierDistill


def test_recomputed_attention_reproduces_the_timm_block():
    """block_attention's weights, applied to the values and projected, give exactly what the
    timm Attention module (fused kernel or not) outputs: they are the weights it used."""
    torch.manual_seed(0)
    vit = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64).eval()
    attn = vit.blocks[0].attn
    x = torch.randn(2, 18, vit.embed_dim)
    with torch.no_grad():
        w = block_attention(attn, x)
        qkv = attn.qkv(x).reshape(2, 18, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = attn.proj((w @ qkv[2]).transpose(1, 2).reshape(2, 18, -1))
        want = attn(x)
    assert w.shape == (2, attn.num_heads, 18, 18)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, attn.num_heads, 18))
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-4)


def test_gradcam_of_a_pooled_linear_head_is_the_class_activation_map():
    """With global average pooling and a linear head, the logit's gradient on the last feature
    map is head.weight / (h w) everywhere, so Grad-CAM is relu(sum_c w_c A_c) (Zhou et al.'s
    CAM), normalised; of minus the logit (a REAL call) it is relu(-sum_c w_c A_c)."""
    torch.manual_seed(0)
    model = DeepFakeClassifier("tf_efficientnet_lite0").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = model.encoder(x)  # (2, C, 2, 2)
        cam = torch.einsum("c,bchw->bhw", model.head.weight[0], a)
    for sign in (1.0, -1.0):
        want = torch.relu(sign * cam)[:, None]
        want = torch.nn.functional.interpolate(want, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
        want = want / want.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        got = gradcam(model, x, torch.tensor([sign, sign]))
        assert got.shape == (2, 64, 64) and got.min() >= 0 and got.max() <= 1 + 1e-6
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    assert all(p.grad is None for p in model.parameters())  # nothing accumulates on the weights


def test_gradcam_leaves_the_model_untouched_and_handles_clips():
    torch.manual_seed(0)
    model = DeepFakeClassifierSeq3D("tf_efficientnet_lite0", seq_len=3).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clip = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        logits = model(clip)
    maps = gradcam(model, clip)
    assert maps.shape == (6, 64, 64) and np.isfinite(maps).all()
    assert len(model.encoder._forward_hooks) == 0  # the hook is removed
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with torch.no_grad():
        torch.testing.assert_close(model(clip), logits)


def test_attention_rollout_of_fused_tokens_maps_the_patches_and_reports_no_cnn_share():
    torch.manual_seed(0)
    model = DeepFakeClassifierDistill("tf_efficientnet_lite0", vit="vit_small_patch32_224", size=64,
                                      tokens="fused").eval()
    maps, share = attention_rollout(model, torch.randn(2, 3, 64, 64))
    assert maps.shape == (2, 64, 64) and np.isnan(share).all()


def test_attention_rollout_maps_and_the_cnn_token_share():
    torch.manual_seed(0)
    model = DeepFakeClassifierDistill("tf_efficientnet_lite0", vit="deit_tiny_patch16_224", size=64).eval()
    x = torch.randn(3, 3, 64, 64)
    maps, share = attention_rollout(model, x)
    assert maps.shape == (3, 64, 64) and np.allclose(maps.reshape(3, -1).min(1), 0)
    assert np.allclose(maps.reshape(3, -1).max(1), 1)  # min-max scaled
    assert share.shape == (3,) and ((share > 0) & (share < 1)).all()
    assert all(len(b.attn._forward_hooks) == 0 for b in model.vit.blocks)
    # a block that attends only to itself passes nothing on: with every block an identity
    # (as if attention were switched off), the rollout is the identity and the patch map flat
    n = 2 + 16 + 4
    eye = torch.eye(n)

    def identity_attention(attn, inp):
        return eye.expand(inp.shape[0], attn.num_heads, n, n)

    import inference.explain as ex

    original = ex.block_attention
    ex.block_attention = identity_attention
    try:
        flat, share0 = attention_rollout(model, x)
    finally:
        ex.block_attention = original
    assert np.allclose(flat, 0)  # the class tokens' rows hold no patch mass at all
    assert np.allclose(share0, 0)


def test_pick_faces_spreads_over_time_and_keeps_the_extremes():
    keys = [(f, 0) for f in range(0, 320, 10)]
    scores = {k: 0.5 for k in keys}
    scores[(130, 0)], scores[(170, 0)] = 0.99, 0.01
    chosen = pick_faces(keys, scores, n=6)
    assert len(chosen) == 6 and chosen == sorted(chosen)
    assert (130, 0) in chosen and (170, 0) in chosen
    assert chosen[0][0] == 0  # spread from the start of the video
    assert pick_faces(keys[:3], scores, n=6) == keys[:3]


def test_page_names_are_flat_and_unique():
    assert page_name("part_0/abc.mp4") == "part_0__abc.mp4.html"
    assert page_name("abc.mp4") != page_name("abc.avi")
    assert "/" not in page_name("a/b/c.mp4")
    assert page_name("../data/./a.mp4") == "data__a.mp4.html" and page_name("/abs/a.mp4") == "abs__a.mp4.html"


def test_overlay_and_a_failure_page():
    img = np.full((32, 32, 3), 128, np.uint8)
    heat = np.zeros((32, 32))
    heat[:16] = 1.0
    out = overlay(img, heat)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out[0, 0, 0] > out[31, 0, 0]  # jet: red where the map is high
    page = render_page("x/<v>.mp4", 0.5, "ValueError: no face")
    assert "UNKNOWN" in page and "&lt;v&gt;" in page and "no face" in page and "imgcheck" in page
    # scored, but the explanation failed: the page keeps the score and verdict, says what failed
    page = failure_page("v.mp4", "the explanation failed (RuntimeError: boom)", None, 0.8, strategy="confident")
    assert "<b>0.8000</b>" in page and "FAKE" in page and "Not scored" not in page and "boom" in page
