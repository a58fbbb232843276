"""selim's hardcore blackouts (training/augmentations.py)."""
from collections import Counter
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from preprocessing.artifacts import WorkDir, read_png
from training.augmentations import (BIT_MASK_MIN_VISIBLE, BIT_MASKS, FACE_OUTLINE, apply_hardcore, bit_masks,
                                    blackout_convex_hull_half, blackout_landmark_part, choose_bit_mask,
                                    choose_hull_half, face_landmarks68, hull_half_mask, landmark_part_mask)
from training.datasets import load_folds

from test_datasets import LANDMARKS5, smooth_image

H, W = 131, 107  # smooth_image's crop: not square, so h // 2 != w // 2


def face68(h=H, w=W):
    """A plausible dlib 68-point face in the crop's face box: a U-shaped jaw (0-16), the
    eyebrows (17-26) above, the inner points (27-67) around the centre."""
    cx, cy, rx, ry = w / 2, h * 0.45, w * 0.3, h * 0.35
    t = np.linspace(np.pi, 0, 17)                                  # jaw, left to right, through the chin
    jaw = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)
    brows = np.stack([np.linspace(cx - rx * 0.9, cx + rx * 0.9, 10), np.full(10, cy - ry * 0.35)], 1)
    inner = np.stack([cx + rx * 0.5 * np.cos(np.arange(41)), cy + ry * 0.3 * np.sin(np.arange(41))], 1)
    return np.concatenate([jaw, brows, inner]).astype(np.float32)


class StubPredictor:
    """Stands in for dlib's shape predictor (fast): always the same 68 points."""

    def __init__(self, points):
        self.points = points

    def __call__(self, img, rect):
        return SimpleNamespace(parts=lambda: [SimpleNamespace(x=int(round(x)), y=int(round(y)))
                                              for x, y in self.points])


STUB = StubPredictor(face68())


def branches(n, landmarks, label=0, diff=None, img=None):
    img = smooth_image() if img is None else img
    return [apply_hardcore(img, label, landmarks, diff, np.random.default_rng(s), predictor=STUB,
                           return_branch=True)[1] for s in range(n)]


def near(count, n, p):
    """count/n is within 4 standard deviations of p."""
    return abs(count / n - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-9


# --------------------------------------------------------------------------- cascade
def test_branch_frequencies_follow_selims_cascade():
    n = 4000
    with_landmarks = branches(n, LANDMARKS5)
    counts = Counter(b for b, _ in with_landmarks)
    assert near(counts["landmark"], n, 0.7)
    assert near(counts["hull"], n, 0.3 * 0.2)
    assert near(counts["bitmask"], n, 0.3 * 0.8 * 0.1)
    assert near(counts["none"], n, 0.3 * 0.8 * 0.9)
    parts = Counter(c for b, c in with_landmarks if b == "landmark")
    k = counts["landmark"]
    for part, p in (("eyes", 0.5), ("mouth", 0.25), ("nose", 0.125), (None, 0.125)):
        assert near(parts[part], k, p), (part, parts)
    halves = Counter(c for b, c in with_landmarks if b == "hull")
    assert set(halves) == {"left", "right", "top", "bottom"}

    without = Counter(b for b, _ in branches(n, None))
    assert without["landmark"] == 0
    assert near(without["hull"], n, 0.2)
    assert near(without["bitmask"], n, 0.8 * 0.1)
    assert near(without["none"], n, 0.8 * 0.9)


def test_hull_half_and_bit_mask_choices_are_uniform():
    n = 4000
    halves = Counter(choose_hull_half(np.random.default_rng(s)) for s in range(n))
    assert all(near(halves[h], n, 0.25) for h in ("left", "right", "top", "bottom")), halves
    names = Counter(choose_bit_mask((H, W), 0, None, np.random.default_rng(s)) for s in range(n))
    assert all(near(names[m], n, 1 / 6) for m in BIT_MASKS), names


def test_blackout_is_what_the_branch_says():
    img = smooth_image()
    seen = set()
    for s in range(300):
        out, mask, (branch, choice) = apply_hardcore(img, 0, LANDMARKS5, None, np.random.default_rng(s),
                                                     predictor=STUB, return_mask=True, return_branch=True)
        seen.add(branch)
        if branch == "landmark" and choice is not None:
            expected = landmark_part_mask(img.shape, LANDMARKS5, choice)
        elif branch == "hull":
            expected = hull_half_mask(img.shape, face68(), choice)
        elif branch == "bitmask":
            expected = bit_masks(img.shape)[choice]
        else:
            expected = np.zeros(img.shape[:2], bool)
        assert np.array_equal(mask, expected)
        assert (out[mask] == 0).all() and np.array_equal(out[~mask], img[~mask])
        again = apply_hardcore(img, 0, LANDMARKS5, None, np.random.default_rng(s), predictor=STUB)
        assert np.array_equal(out, again)  # deterministic given the rng
    assert not (img == 0).all(-1).any()   # the input is untouched (pure function)
    assert seen == {"landmark", "hull", "bitmask", "none"}


# --------------------------------------------------------------------------- label neutrality
def test_blackout_decision_is_independent_of_the_label():
    """Same seed -> same branch and same later draws for a REAL, a FAKE with a diff and a
    FAKE without one: a blackout can never be a cue for the label."""
    img = smooth_image()
    diff = np.zeros((H, W), np.uint8)
    diff[10:40, 10:40] = 200          # manipulated top-left: the bit masks that hide it are avoided
    for landmarks in (LANDMARKS5, None):
        blacked = Counter()
        for s in range(1500):
            results = []
            for label, d in ((0, None), (1, diff), (1, None)):
                rng = np.random.default_rng(s)
                _, mask, branch = apply_hardcore(img, label, landmarks, d, rng, predictor=STUB,
                                                 return_mask=True, return_branch=True)
                results.append((branch, mask.any(), rng.random()))
                blacked[label, d is None] += mask.any()
            (b0, m0, r0), (b1, m1, r1), (b2, m2, r2) = results
            assert b0[0] == b1[0] == b2[0] and m0 == m1 == m2 and r0 == r1 == r2
            if b0[0] != "bitmask":
                assert b0 == b1 == b2   # the diff only steers which bit mask
        assert blacked[0, True] == blacked[1, False] == blacked[1, True] > 300


def test_fake_without_usable_diff_is_still_masked():
    img = smooth_image()
    tiny = np.zeros((H, W), np.uint8)
    tiny[5:7, 5:10] = 255          # 10 manipulated pixels: no mask can keep more than 20
    for s in range(200):
        for d in (None, tiny):
            _, mask, (branch, _) = apply_hardcore(img, 1, None, d, np.random.default_rng(s), predictor=STUB,
                                                  return_mask=True, return_branch=True)
            assert mask.any() == (branch in ("hull", "bitmask"))
    names = Counter(choose_bit_mask((H, W), 1, tiny, np.random.default_rng(s)) for s in range(600))
    assert set(names) == set(BIT_MASKS)


# --------------------------------------------------------------------------- bit masks
def test_bit_masks_are_halves_and_quadrants():
    masks = bit_masks((H, W))
    assert tuple(masks) == BIT_MASKS
    mid_h, mid_w = H // 2, W // 2     # 65 and 53: selim's code split the height at w // 2
    rows, cols = np.mgrid[:H, :W]
    top, left = rows < mid_h, cols < mid_w
    expected = {"top": top, "bottom": ~top, "left": left, "right": ~left,
                "tl_br": (top & left) | (~top & ~left), "tr_bl": (top & ~left) | (~top & left)}
    for name in BIT_MASKS:
        assert masks[name].shape == (H, W) and masks[name].dtype == bool
        assert np.array_equal(masks[name], expected[name]), name
    assert masks["top"][mid_h - 1].all() and not masks["top"][mid_h].any()


def test_bit_mask_on_a_fake_keeps_manipulated_pixels():
    diff = np.zeros((H, W), np.uint8)
    diff[10:40, 10:40] = 200          # only the top-left quadrant is manipulated
    masks = bit_masks((H, W))
    fake = Counter(choose_bit_mask((H, W), 1, diff, np.random.default_rng(s)) for s in range(600))
    assert set(fake) == {"bottom", "right", "tr_bl"}     # the masks that leave it visible, uniformly
    assert all(near(fake[m], 600, 1 / 3) for m in fake), fake
    for name in fake:
        assert np.count_nonzero(diff * ~masks[name]) > BIT_MASK_MIN_VISIBLE
    assert set(Counter(choose_bit_mask((H, W), 0, diff, np.random.default_rng(s)) for s in range(600))) \
        == set(BIT_MASKS)             # a real crop takes any
    # through apply_hardcore, with a 3-channel diff
    img, hits = smooth_image(), 0
    for s in range(600):
        out, mask, (branch, name) = apply_hardcore(img, 1, None, np.dstack([diff] * 3), np.random.default_rng(s),
                                                   predictor=STUB, return_mask=True, return_branch=True)
        if branch == "bitmask":
            hits += 1
            assert name in {"bottom", "right", "tr_bl"} and np.array_equal(mask, masks[name])
            assert np.count_nonzero(diff * ~mask) > BIT_MASK_MIN_VISIBLE and (out[mask] == 0).all()
    assert hits > 20


# --------------------------------------------------------------------------- landmark parts
def _band_thickness(mask, p1, p2):
    """Length (px) of the mask along the normal of the segment p1-p2 at its middle."""
    p1, p2 = np.float64(p1), np.float64(p2)
    d = (p2 - p1) / np.linalg.norm(p2 - p1)
    normal, mid = np.array([-d[1], d[0]]), (p1 + p2) / 2
    t = np.arange(-60, 60, 0.05)
    xy = np.round(mid + t[:, None] * normal).astype(int)
    ok = (xy[:, 0] >= 0) & (xy[:, 0] < mask.shape[1]) & (xy[:, 1] >= 0) & (xy[:, 1] < mask.shape[0])
    return mask[xy[ok, 1], xy[ok, 0]].sum() * 0.05


def test_band_widths_follow_selim():
    # eyes 40 px apart (N = 10), mouth 36 px wide (N = 12), the nose straight below the eyes
    pts = np.array([[30, 50], [70, 50], [50, 75], [32, 95], [68, 95]], np.float32)
    eyes, mouth, nose = (landmark_part_mask((H, W), pts, p) for p in ("eyes", "mouth", "nose"))
    assert eyes[:, 50].sum() == 2 * 10 + 3          # a thickness-2 line is 3 px, +N on each side
    assert mouth[:, 50].sum() == 2 * 12 + 3         # mouth: N = mouth_width // 3
    assert nose[62, :].sum() == 2 * 10 + 3          # nose: N = eye_dist // 4, across the line to the eyes
    assert nose[50, 50] and nose[75, 50] and not nose[50, 30] and eyes[50, 30 - 11] and not eyes[50, 30 - 12]
    # tilted real MTCNN points, measured across the line
    left_eye, right_eye, nose_pt, mouth_l, mouth_r = LANDMARKS5
    eye_n = int(np.linalg.norm(right_eye - left_eye) // 4)
    mouth_n = int(np.linalg.norm(mouth_r - mouth_l) // 3)
    for part, ends, n in (("eyes", (left_eye, right_eye), eye_n), ("mouth", (mouth_l, mouth_r), mouth_n),
                          ("nose", (nose_pt, (left_eye + right_eye) / 2), eye_n)):
        thickness = _band_thickness(landmark_part_mask((H, W), LANDMARKS5, part), *ends)
        assert 2 * n + 1.5 <= thickness <= 2 * n + 4, (part, thickness, n)


def test_bands_match_selims_scipy_recipe():
    ndimage = pytest.importorskip("scipy.ndimage")
    pts = np.round(LANDMARKS5 * 1.7).astype(int)     # selim's integer points on a larger crop
    (x1, y1), (x2, y2), (x3, y3), (x4, y4), (x5, y5) = pts
    eye_dist, mouth_w = np.hypot(x2 - x1, y2 - y1), np.hypot(x5 - x4, y5 - y4)
    shape = (int(H * 1.7), int(W * 1.7))
    for part, a, b, n in (("eyes", (x1, y1), (x2, y2), int(eye_dist // 4)),
                          ("mouth", (x4, y4), (x5, y5), int(mouth_w // 3)),
                          ("nose", (x3, y3), (int((x1 + x2) / 2), int((y1 + y2) / 2)), int(eye_dist // 4))):
        line = cv2.line(np.zeros(shape, np.uint8), (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 1, thickness=2)
        reference = ndimage.binary_dilation(line, iterations=n)
        assert np.array_equal(landmark_part_mask(shape, pts, part), reference), part


def test_blackout_landmark_part_changes_pixels():
    img = smooth_image()
    for part in ("eyes", "nose", "mouth"):
        out = blackout_landmark_part(img, LANDMARKS5, np.random.default_rng(0), part=part)
        black = (out != img).any(-1)
        assert black.sum() > 30 and (out[black] == 0).all()
        assert not (img == 0).all(-1).any()  # the input is untouched (pure function)
    eyes = landmark_part_mask(img.shape, LANDMARKS5, "eyes")
    assert eyes[52, 36] and eyes[50, 68] and not eyes[84, 42]
    tiny = LANDMARKS5 * 0.05                          # N = 0: the bare line, not the whole crop
    assert 0 < landmark_part_mask(img.shape, tiny, "eyes").sum() < 20


# --------------------------------------------------------------------------- hull half
def test_hull_half_mask_halves():
    points = face68()
    polygon = np.zeros((H, W), np.uint8)
    cv2.fillPoly(polygon, [np.round(points[FACE_OUTLINE]).astype(np.int32)], 1)
    polygon = polygon > 0
    halves = {h: hull_half_mask((H, W), points, h) for h in ("left", "right", "top", "bottom")}
    ys, xs = np.nonzero(polygon)
    cy, cx = int(ys.mean()), int(xs.mean())
    for a, b in (("left", "right"), ("top", "bottom")):
        assert not (halves[a] & halves[b]).any() and np.array_equal(halves[a] | halves[b], polygon)
    assert halves["left"][:, cx:].sum() == 0 and halves["right"][:, :cx].sum() == 0
    assert halves["top"][cy:].sum() == 0 and halves["bottom"][:cy].sum() == 0
    assert abs(halves["left"].sum() - polygon.sum() / 2) < polygon.sum() * 0.05
    # the outline is the jaw plus the eyebrows (not the hull of all 68 points)
    skimage_draw = pytest.importorskip("skimage.draw")
    outline = points[FACE_OUTLINE]
    rr, cc = skimage_draw.polygon(outline[:, 1], outline[:, 0], (H, W))
    reference = np.zeros((H, W), bool)
    reference[rr, cc] = True
    assert (reference & polygon).sum() / (reference | polygon).sum() > 0.93
    # any other point set: its convex hull
    square = np.array([[20, 20], [80, 20], [80, 100], [20, 100]], np.float32)
    left, top = hull_half_mask((H, W), square, "left"), hull_half_mask((H, W), square, "top")
    assert abs(left.sum() - 61 * 81 / 2) < 61 * 81 * 0.05 and top[30, 50] and not top[90, 50]


def test_blackout_convex_hull_half_with_a_predictor():
    img = smooth_image()
    out = blackout_convex_hull_half(img, np.random.default_rng(0), STUB, half="top")
    assert np.array_equal((out != img).any(-1), hull_half_mask((H, W), face68(), "top"))
    assert np.array_equal(face_landmarks68(img, STUB), np.round(face68()))
    implausible = StubPredictor(np.full((68, 2), 50.0))     # all 68 points on one pixel
    assert face_landmarks68(img, implausible) is None
    assert np.array_equal(blackout_convex_hull_half(img, np.random.default_rng(0), implausible), img)
    for s in range(100):   # the hull branch with no plausible face changes nothing
        out, mask, (branch, _) = apply_hardcore(img, 0, None, None, np.random.default_rng(s), implausible,
                                                return_mask=True, return_branch=True)
        if branch == "hull":
            assert not mask.any() and np.array_equal(out, img)


# --------------------------------------------------------------------------- sample crops
@pytest.mark.slow
def test_hardcore_on_sample_crops(sample_work):
    work, _ = sample_work
    df = load_folds(work)
    real_row = df[df.label == 0].iloc[0]
    img = read_png(work / real_row.file)
    out = blackout_convex_hull_half(img, np.random.default_rng(0))
    assert (out != img).any(-1).mean() > 0.05  # dlib found the face: a half hull is black

    fake_row = df[(df.label == 1) & (df.original != "")].iloc[0]
    diff = read_png(WorkDir(work).diff(fake_row.video, fake_row.frame, fake_row.face), gray=True)
    fake_img = read_png(work / fake_row.file)
    fake_points = np.load(WorkDir(work).landmarks(fake_row.original, fake_row.frame, fake_row.face))
    masks, seen = bit_masks(fake_img.shape), Counter()
    for s in range(60):
        results = {}
        for label, d in ((1, diff), (1, None), (0, None)):
            results[label, d is None] = apply_hardcore(fake_img, label, fake_points, d, np.random.default_rng(s),
                                                       return_mask=True, return_branch=True)
        out, black, (branch, choice) = results[1, False]
        seen[branch] += 1
        assert (out[black] == 0).all() and np.array_equal(out[~black], fake_img[~black])
        assert {r[2][0] for r in results.values()} == {branch}                 # label-blind branch
        assert len({r[1].any() for r in results.values()}) == 1
        if branch == "hull":
            assert black.mean() > 0.05       # dlib fitted the face in the crop
        if branch == "bitmask" and any(np.count_nonzero(diff * ~m) > 20 for m in masks.values()):
            assert np.count_nonzero(diff * ~black) > 20
    assert seen["landmark"] > 25
