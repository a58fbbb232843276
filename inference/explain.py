"""Why step 6 called a video FAKE or REAL: one self-contained HTML page per video.

A page holds the sampled frames with their face boxes, the faces' scores over time, and
for a handful of faces the model input each model saw with a heatmap of what drove its
score:
- Grad-CAM (Selvaraju et al. 2017) for the CNN families: the last feature map of the
  encoder, weighted by the mean gradient of the face's logit, rectified and upsampled. The
  gradient is of the model's own call for that face: of the logit when it says FAKE, of
  minus the logit when it says REAL. For a sequence model it is the clip's summed
  per-frame logits, shown on the anchor frame.
- Attention rollout (Abnar & Zuidema 2020) for the ViT-distillation family: per block the
  head-averaged attention plus the identity (the residual), rows renormalised, multiplied
  through the blocks; the class and distillation tokens' rows (the two heads the score
  averages) over the ViT's patch tokens give the map, min-max scaled. The share of that attention which
  goes to the CNN tokens is printed beside it.

Images are inlined (base64 JPEG/PNG), so a page works offline and can be mailed alone.
The pages and `index.html` are written atomically; a failure to explain never changes a
prediction (`predict_videos` records it as a note).
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import cv2
import numpy as np
import torch

MAX_FACES = 8              # faces per page with heatmaps (every sampled face is in the plot and on the frames)
THUMB_LONG_SIDE = 480      # px of the frame pictures
HEAT_ALPHA = 0.45          # heatmap opacity over the model input


def page_name(video: str) -> str:
    """The page file of a video name (`part_0/abc.mp4` -> `part_0__abc.mp4.html`): flat,
    the extension kept (a.mp4 and a.avi differ), never hidden (`../x/a.mp4` ->
    `x__a.mp4.html`), the same in 6_predict and tools/evaluate."""
    parts = [p for p in video.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "__".join(parts).lstrip(".") + ".html"


def thumbnail(frame: np.ndarray, long_side: int = THUMB_LONG_SIDE) -> tuple[np.ndarray, float]:
    """(downscaled RGB frame, its scale)."""
    h, w = frame.shape[:2]
    s = min(1.0, long_side / max(h, w))
    if s >= 1.0:
        return frame.copy(), 1.0
    return cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


# --------------------------------------------------------------------------- heatmaps
def _normalise_map(cam: torch.Tensor) -> torch.Tensor:
    """(B, h, w) -> each map scaled to [0, 1] by its maximum (an all-zero map stays zero)."""
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return cam / peak


def gradcam(model: torch.nn.Module, x: torch.Tensor, sign: torch.Tensor | None = None) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] at the input resolution, one per encoder image.

    x: (B, 3, H, W) for a frame model, (B, T, 3, H, W) for a sequence model (N = B * T).
    The target is the sum of each item's logits times `sign` (B,) (+1: evidence for FAKE,
    -1: for REAL; default +1). The model's `encoder` must return the last feature map.
    """
    store = {}

    def keep(_module, _inputs, output):
        store["a"] = output

    handle = model.encoder.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)  # gradients flow even with frozen weights
            logits = model(x).float().reshape(x.shape[0], -1)  # (B, 1) or (B, T)
            s = torch.ones(x.shape[0], device=x.device) if sign is None else sign.to(x.device).float()
            # the feature map's gradient only: no .grad is left on the weights
            (grad,) = torch.autograd.grad((logits.sum(1) * s).sum(), store["a"])
    finally:
        handle.remove()
    a = store["a"].detach()
    weights = grad.float().mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * a.float()).sum(1))
    cam = torch.nn.functional.interpolate(cam[:, None], size=tuple(x.shape[-2:]), mode="bilinear",
                                          align_corners=False)[:, 0]
    return _normalise_map(cam).cpu().numpy()


def block_attention(attn: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The attention weights (B, heads, N, N) a timm `Attention` computes on its input x
    (B, N, C); recomputed from its qkv projection, q/k norms and scale, since the fused
    kernel never materialises them."""
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


@torch.no_grad()
def attention_rollout(model: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(maps (B, H, W) in [0, 1] at the input resolution, share of the class and
    distillation tokens' rolled-out attention that lands on CNN tokens (B,); NaN with
    fused tokens, where each patch token carries its CNN cell), for a
    `DeepFakeClassifierDistill` on x (B, 3, H, W)."""
    attentions = []

    def keep(module, inputs, _output):
        attentions.append(block_attention(module, inputs[0]).mean(1))  # heads averaged: (B, N, N)

    handles = [blk.attn.register_forward_hook(keep) for blk in model.vit.blocks]
    try:
        model.tokens(x)
    finally:
        for h in handles:
            h.remove()
    b, n, _ = attentions[0].shape
    eye = torch.eye(n, device=x.device)
    rollout = eye.expand(b, n, n)
    for a in attentions:
        a = 0.5 * a + 0.5 * eye
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    grid = model.vit.patch_embed.grid_size
    num_patches = grid[0] * grid[1]
    # the rows of the tokens that score: the class and distillation tokens', or the
    # distillation token's alone (model.output "dist", Heo et al.)
    rows = rollout[:, 1] if getattr(model, "output", "mean") == "dist" else rollout[:, :2].mean(1)
    patches = rows[:, 2:2 + num_patches]
    cnn_share = rows[:, 2 + num_patches:].sum(1) / rows[:, 2:].sum(1).clamp_min(1e-12)
    if getattr(model, "token_mode", "separate") == "fused":  # every token carries its CNN cell: no share to tell
        cnn_share = torch.full_like(cnn_share, float("nan"))
    maps = patches.reshape(b, 1, *grid)
    maps = torch.nn.functional.interpolate(maps, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    # min-max: rollout maps are all positive and often nearly flat, so scaling by the maximum
    # alone would paint the whole face red
    maps = maps - maps.flatten(1).amin(1)[:, None, None]
    return _normalise_map(maps).cpu().numpy(), cnn_share.cpu().numpy()


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = HEAT_ALPHA) -> np.ndarray:
    """An RGB uint8 image with a [0, 1] heatmap of its size blended over it (jet colours:
    red is where the map is high)."""
    colour = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    return np.clip((1 - alpha) * image.astype(np.float32) + alpha * colour, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- the page
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _jpeg_tag(image: np.ndarray, alt: str, width: int | None = None, quality: int = 85) -> str:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise IOError("JPEG encoding failed")
    size = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}"{size} src="data:image/jpeg;base64,{_b64(buf.tobytes())}">'


def _score_colour(p: float | None) -> tuple[int, int, int]:
    if p is None:
        return (160, 160, 160)
    return (int(255 * p), int(200 * (1 - p)), 40)  # green (REAL) to red (FAKE)


def frames_with_boxes(thumbs: dict[int, tuple[np.ndarray, float]], face_scores: dict[tuple[int, int], float],
                      boxes: dict[tuple[int, int], list[float]]) -> list[tuple[int, np.ndarray]]:
    """Every sampled frame (thumbnail) with its faces boxed and labelled by their mean score."""
    out = []
    for frame in sorted(thumbs):
        img, s = thumbs[frame]
        img = img.copy()
        for (f, k), box in sorted(boxes.items()):
            if f != frame:
                continue
            p = face_scores.get((f, k))
            x1, y1, x2, y2 = (int(round(v * s)) for v in box[:4])
            colour = _score_colour(p)
            cv2.rectangle(img, (x1, y1), (x2, y2), colour, 2)
            label = f"{k}: {p:.2f}" if p is not None else f"{k}"
            cv2.putText(img, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
        out.append((frame, img))
    return out


def score_plot_png(series: dict[str, list[tuple[float, float]]], fps: float) -> bytes:
    """Each model's face scores over time (seconds), with the 0.5 line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    try:
        for name, points in series.items():
            if not points:
                continue
            pts = sorted(points)
            t = np.array([f for f, _ in pts]) / max(fps, 1e-6)
            p = np.array([q for _, q in pts])
            ax.plot(t, p, "o-", ms=3, lw=1, label=name, alpha=0.85)
        ax.axhline(0.5, color="k", lw=0.8, ls="--")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("P(fake) per face")
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 1300px; }
h1 { font-size: 1.4em; word-break: break-all; } .fake { color: #b00; } .real { color: #070; } .unknown { color: #777; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: center; vertical-align: top; font-size: 0.9em; }
th { background: #f3f3f3; }
.frames img { margin: 2px; }
.frames figure { display: inline-block; margin: 2px; } figcaption { font-size: 0.75em; color: #555; }
.note { color: #555; font-size: 0.9em; }
"""

# The browser check of tests/test_explain.py reads this: every picture decoded.
IMAGE_CHECK = """<p id="imgcheck" class="note">checking pictures</p>
<script>window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.getElementById("imgcheck").textContent = "pictures decoded: " + ok + "/" + imgs.length;
});</script>"""


def _verdict(prob: float, error: str | None) -> tuple[str, str]:
    if error:
        return "UNKNOWN", "unknown"
    return ("FAKE", "fake") if prob >= 0.5 else ("REAL", "real")


def render_page(name: str, prob: float, error: str | None, *, strategy: str = "", calibrated: bool = False,
                details: dict | None = None, frames: list | None = None, plot_png: bytes | None = None,
                face_rows: list | None = None, model_kinds: dict | None = None, note: str | None = None) -> str:
    esc = html.escape
    verdict, cls = _verdict(prob, error)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(name)}: {verdict}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>{esc(name)}</h1>",
             f"<p>P(fake) = <b>{prob:.4f}</b> &rarr; <b class='{cls}'>{verdict}</b>"
             + (f" &middot; ensemble strategy <code>{esc(strategy)}</code>" if strategy else "")
             + (" &middot; temperature-calibrated" if calibrated else "") + "</p>"]
    if error:
        parts.append(f"<p class='unknown'>Not scored: {esc(error)} (the submission gets 0.5).</p>")
    if note:
        parts.append(f"<p class='note'>{esc(note)}</p>")
    if details:
        rows = ""
        for m, d in details["models"].items():
            score = "n/a" if d["video_score"] is None else f"{d['video_score']:.4f}"
            kind = (model_kinds or {}).get(m, "")
            count = len(d["faces"]) if "faces" in d else f"{len(d.get('segments', []))} segments (MDS)"
            kind = kind or ("audio-visual dissonance" if "segments" in d else "")
            rows += f"<tr><td>{esc(m)}</td><td>{esc(kind)}</td><td>{score}</td><td>{count}</td></tr>"
        parts.append(f"<h2>Models</h2><p>{details['faces']} faces on {details['frames']} sampled frames.</p>"
                     f"<table><tr><th>model</th><th>explained by</th><th>video score</th><th>predictions</th></tr>"
                     f"{rows}</table>")
    if plot_png:
        parts.append("<h2>Scores over time</h2>"
                     f"<img alt='face scores over time' src='data:image/png;base64,{_b64(plot_png)}'>")
    if face_rows:
        models = list(face_rows[0]["cells"])
        head = "".join(f"<th>{esc(m)}</th>" for m in models)
        body = []
        for row in face_rows:
            cells = "".join(f"<td>{c}</td>" for c in row["cells"].values())
            body.append(f"<tr><td>frame {row['frame']}<br>face {row['face']}<br>{row['crop']}</td>{cells}</tr>")
        parts.append("<h2>Faces and what drove their scores</h2>"
                     "<p class='note'>Each cell is the model's input (after its resize, padding and test-time flip) "
                     "with its heatmap: red marks what pushed the model towards its call for that face "
                     "(Grad-CAM for CNNs, attention rollout for the ViT).</p>"
                     f"<table><tr><th>face</th>{head}</tr>{''.join(body)}</table>")
    if frames:
        figs = "".join(f"<figure>{_jpeg_tag(img, f'frame {f}', quality=80)}<figcaption>frame {f}</figcaption></figure>"
                       for f, img in frames)
        parts.append(f"<h2>Sampled frames</h2><p class='note'>Boxes are labelled face index: mean score of the "
                     f"models (green REAL, red FAKE).</p><div class='frames'>{figs}</div>")
    parts.append(IMAGE_CHECK)
    parts.append("</body></html>")
    return "\n".join(parts)


def explain_kind(m) -> str:
    from training.zoo.distill import DeepFakeClassifierDistill

    return "attention rollout" if isinstance(m.model, DeepFakeClassifierDistill) else "Grad-CAM"


def _item_indices(faces, m) -> dict[tuple[int, int], int]:
    """(frame, face) -> which of model m's inputs (`_model_inputs`) is that face; a face m did
    not score is absent (a sequence model scores its clip anchors only)."""
    keys = faces.clip_keys.get(m.margin) if (m.is_sequence and faces.clips.get(m.margin)) else faces.keys.get(m.margin)
    return {(f, k): i for i, (f, k, _) in enumerate(keys or [])}


def pick_faces(keys: list[tuple[int, int]], scores: dict[tuple[int, int], float], n: int = MAX_FACES) -> list:
    """Up to n (frame, face) keys: spread evenly over time, always with the most FAKE-looking
    face and the most REAL-looking one."""
    keys = sorted(set(keys))
    if len(keys) <= n:
        return keys
    chosen = set()
    scored = [k for k in keys if k in scores]
    if scored:
        chosen |= {max(scored, key=scores.get), min(scored, key=scores.get)}
    for i in np.linspace(0, len(keys) - 1, n).round().astype(int):
        if len(chosen) >= n:
            break
        chosen.add(keys[int(i)])
    return sorted(chosen)


def explain_video(name: str, faces, models, preds, prob: float, *, strategy: str, device: torch.device,
                  calibrated: bool = False, details: dict | None = None, max_faces: int = MAX_FACES) -> str:
    """The page of one scored video (`faces` from FaceExtractor(keep_thumbs=True)); `details`:
    `face_details` of it, when the caller has it already."""
    from .predictor import _model_inputs, _model_keys, face_details

    details = details or face_details(faces, models, preds, strategy)
    indices = [_item_indices(faces, m) for m in models]
    crop_at = {margin: {(f, k): i for i, (f, k, _) in enumerate(keys)} for margin, keys in faces.keys.items()}
    per_face: dict[tuple[int, int], list[float]] = {}
    boxes: dict[tuple[int, int], list[float]] = {}
    series = {}
    for m, p, index in zip(models, preds, indices):
        series[m.name] = [(f, float(x)) for (f, _, _), x in zip(_model_keys(faces, m), p.tolist())]
        for f, k, box in faces.keys.get(m.margin, []):  # the faces on the sampled (anchor) frames
            boxes.setdefault((f, k), box)
        for key, j in index.items():  # a face's score: per model, its anchor frame's prediction
            per_face.setdefault(key, []).append(float(p[j * m.seq_len]))  # seq_len 1: a frame model
    mean_scores = {k: float(np.mean(v)) for k, v in per_face.items()}

    inputs = [_model_inputs(faces, m) for m in models]
    rows = []
    for f, k in pick_faces(list(boxes), mean_scores, max_faces):
        cells, crop_tag = {}, ""
        for m, p, index, items in zip(models, preds, indices, inputs):
            j = index.get((f, k))
            if j is None:
                cells[m.name] = "<span class='note'>not scored on this frame</span>"
                continue
            if not crop_tag:
                crop = faces.crops[m.margin][crop_at[m.margin][(f, k)]]
                crop_tag = _jpeg_tag(crop, f"crop {f}/{k}", width=128)
            x = m.augment(items[j])[None].to(device)  # (1, T, 3, h, w)
            shown = m.augment.images(items[j])[0]
            score = float(p[j * m.seq_len])
            if explain_kind(m) == "attention rollout":
                heat, cnn_share = attention_rollout(m.model, x[:, 0])
                extra = ("" if np.isnan(cnn_share[0]) else
                         f"<br><small>{100 * cnn_share[0]:.0f}% of attention on CNN tokens</small>")
            else:
                sign = torch.tensor([1.0 if score >= 0.5 else -1.0])
                heat = gradcam(m.model, x if m.is_sequence else x[:, 0], sign)
                extra = ""
            call = "FAKE" if score >= 0.5 else "REAL"
            cells[m.name] = (f"{_jpeg_tag(overlay(shown, heat[0]), f'{m.name} heatmap', width=160)}<br>"
                             f"<b class='{call.lower()}'>{score:.3f}</b> {call}{extra}")
        rows.append({"frame": f, "face": k, "crop": crop_tag, "cells": cells})

    frames = frames_with_boxes(faces.thumbs, mean_scores, boxes) if faces.thumbs else None
    return render_page(name, prob, None, strategy=strategy, calibrated=calibrated, details=details,
                       frames=frames, plot_png=score_plot_png(series, faces.fps), face_rows=rows,
                       model_kinds={m.name: explain_kind(m) for m in models}, note=faces.decoder_note)


def failure_page(name: str, error: str, faces=None, prob: float | None = None, **scored) -> str:
    """The page of a video that could not be scored: why, and its frames when they were read.
    With `prob`, the video was scored and only its explanation failed: the page gives the
    score, `scored` (strategy, calibrated, details) and the failure as a note."""
    frames = frames_with_boxes(faces.thumbs, {}, {}) if faces is not None and faces.thumbs else None
    if prob is not None:
        return render_page(name, prob, None, frames=frames, note=error, **scored)
    return render_page(name, 0.5, error, frames=frames)


def write_index(out_dir: str | Path, rows: list[tuple[str, float]], errors: dict[str, str]) -> Path:
    """index.html: every video with its score, verdict and a link to its page."""
    from preprocessing.artifacts import atomic_write_text

    esc = html.escape
    items = []
    for name, prob in rows:
        verdict, cls = _verdict(prob, errors.get(name))
        items.append(f"<tr><td><a href='{esc(page_name(name))}'>{esc(name)}</a></td><td>{prob:.4f}</td>"
                     f"<td class='{cls}'>{verdict}</td><td class='note'>{esc(errors.get(name, ''))}</td></tr>")
    path = Path(out_dir) / "index.html"
    atomic_write_text(path, f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>explanations</title>"
                            f"<style>{STYLE}</style></head><body><h1>{len(rows)} videos</h1><table><tr><th>video</th>"
                            f"<th>P(fake)</th><th>verdict</th><th></th></tr>{''.join(items)}</table></body></html>")
    return path
