"""Video-level aggregation strategies and temperature calibration (step 6).

Expected values are computed by hand and written as literals, so a test fails if an
implementation detail (a strict vs non-strict threshold, which weights ntech uses, a
floor division) changes, not only if the code disagrees with itself.
"""
import json

import numpy as np
import pytest
from sklearn.metrics import log_loss

from inference.aggregation import (STRATEGIES, aggregate, confident_strategy, ensemble,
                                   mean_strategy, ntech_strategy, ntech_transform)
from inference.calibration import (apply_temperature, fit_temperature, load_calibration,
                                   save_calibration)


# --------------------------------------------------------------------------- confident
def test_confident_majority_of_fakes_returns_mean_of_confident_faces():
    # 12 of 20 above 0.8: 12 > 20 // 2.5 = 8 and 12 > 11 -> mean of the 12 = (6*0.9 + 6*0.95)/12
    pred = [0.9] * 6 + [0.95] * 6 + [0.3] * 8
    assert confident_strategy(pred) == pytest.approx(0.925)


def test_confident_needs_more_than_11_fakes():
    # 11 above 0.8 is not enough ("> 11"): plain mean = (11*0.9 + 9*0.3)/20 = 12.6/20
    pred = [0.9] * 11 + [0.3] * 9
    assert confident_strategy(pred) == pytest.approx(0.63)


def test_confident_needs_more_than_len_over_2_5_fakes():
    # 30 faces: 30 // 2.5 = 12.0; 12 fakes is not more -> plain mean = (12*0.9 + 18*0.1)/30
    assert confident_strategy([0.9] * 12 + [0.1] * 18) == pytest.approx(0.42)
    # 13 fakes are more than 12 (and than 11) -> mean of the fakes
    assert confident_strategy([0.9] * 13 + [0.1] * 17) == pytest.approx(0.9)


def test_confident_threshold_is_strict_and_configurable():
    # exactly 0.8 is not "> 0.8": 12 faces at 0.8 -> no fake branch, plain mean = (9.6 + 2.4)/20
    assert confident_strategy([0.8] * 12 + [0.3] * 8) == pytest.approx(0.6)
    # with t = 0.7 the same faces count: mean of the 12 faces at 0.8
    assert confident_strategy([0.8] * 12 + [0.3] * 8, t=0.7) == pytest.approx(0.8)


def test_confident_real_branch_returns_mean_of_low_faces():
    # 19 of 20 below 0.2: 19 > 0.9 * 20 = 18 -> mean of those = (10*0.05 + 9*0.15)/19 = 1.85/19
    pred = [0.05] * 10 + [0.15] * 9 + [0.95]
    assert confident_strategy(pred) == pytest.approx(0.0973684211)
    # 18 of 20 is not more than 18 -> plain mean = (18*0.1 + 2*0.7)/20 = 3.2/20
    assert confident_strategy([0.1] * 18 + [0.7] * 2) == pytest.approx(0.16)


def test_confident_mixed_evidence_is_plain_mean():
    assert confident_strategy([0.5, 0.6, 0.1, 0.9]) == pytest.approx(0.525)


# --------------------------------------------------------------------------- ntech
def test_ntech_transform_by_hand():
    # d = 0.4 -> 0.4**0.65 = 0.5512 -> 1.0512 clipped to 0.99; d = -0.4 -> -0.0512 -> 0.01;
    # d = 0.1 -> 0.1**0.65 = 0.22387 -> 0.72387; d = 0 -> 0.5; d = 0.2 -> 0.2**0.65 = 0.35129
    out = ntech_transform(np.array([0.9, 0.1, 0.6, 0.5, 0.7]))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [0.99, 0.01, 0.72387, 0.5, 0.85129], atol=1e-5)


def test_ntech_transform_is_symmetric_and_clips_extremes():
    np.testing.assert_allclose(ntech_transform([0.0, 1.0]), [0.01, 0.99])
    np.testing.assert_allclose(ntech_transform([0.3, 0.7]), [1 - 0.85129, 0.85129], atol=1e-5)
    np.testing.assert_allclose(ntech_transform([0.2, 0.8], power=1.0, clip=(0.0, 1.0)), [0.2, 0.8])
    np.testing.assert_allclose(ntech_transform([0.0, 1.0], clip=(0.05, 0.95)), [0.05, 0.95])


def test_ntech_strategy_by_hand():
    # p' = [0.99, 0.01, 0.72387]; w = |p - 0.5| + 1e-4 = [0.4001, 0.4001, 0.1001] (original p)
    # (0.4001*0.99 + 0.4001*0.01 + 0.1001*0.72387) / 0.9003 = 0.47256 / 0.9003 = 0.5249
    # (weights from p' would give 0.5416 instead)
    assert ntech_strategy([0.9, 0.1, 0.6]) == pytest.approx(0.5249, abs=5e-5)


def test_ntech_weights_favour_confident_faces():
    # power 1 and no clip: identity transform, so the result is the weighted mean of p
    # with w = [0.4001, 0.1001]: (0.4001*0.9 + 0.1001*0.6) / 0.5002 = 0.42015 / 0.5002
    assert ntech_strategy([0.9, 0.6], power=1.0, clip=(0.0, 1.0)) == pytest.approx(0.83996, abs=1e-5)
    # all at 0.5: every weight is the 1e-4 floor, no division by zero
    assert ntech_strategy([0.5, 0.5, 0.5]) == pytest.approx(0.5)


def test_ntech_all_zeros_and_ones():
    # p' = [0.01, 0.99, 0.99] with equal weights 0.5001 -> 1.99 / 3
    assert ntech_strategy([0.0, 1.0, 1.0]) == pytest.approx(0.663333, abs=1e-6)
    assert ntech_strategy([1.0] * 5) == pytest.approx(0.99)
    assert ntech_strategy([0.0] * 5) == pytest.approx(0.01)


# --------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_empty_gives_one_half(name):
    assert STRATEGIES[name]([]) == 0.5
    assert STRATEGIES[name](np.array([])) == 0.5
    assert aggregate([], name) == 0.5


def test_single_value():
    assert confident_strategy([0.7]) == pytest.approx(0.7)
    assert confident_strategy([0.1]) == pytest.approx(0.1)  # 1 > 0.9 * 1: real branch
    assert mean_strategy([0.7]) == pytest.approx(0.7)
    assert ntech_strategy([0.7]) == pytest.approx(0.85129, abs=1e-5)


def test_all_zeros_and_ones_pass_through_unclipped_for_confident_and_mean():
    assert confident_strategy([1.0] * 20) == 1.0
    assert confident_strategy([0.0] * 20) == 0.0
    assert mean_strategy([0.0, 1.0]) == 0.5


def test_strategies_return_python_floats():
    for name in STRATEGIES:
        assert type(aggregate(np.array([0.2, 0.9], dtype=np.float32), name)) is float


def test_aggregate_dispatches_by_name():
    pred = [0.9, 0.1, 0.6]
    assert set(STRATEGIES) == {"confident", "ntech", "mean"}
    assert aggregate(pred, "mean") == pytest.approx(1.6 / 3)
    assert aggregate(pred, "ntech") == pytest.approx(0.5249, abs=5e-5)
    assert aggregate(pred) == pytest.approx(1.6 / 3)  # default "confident"; mixed -> mean


def test_unknown_strategy_lists_names():
    with pytest.raises(ValueError, match="median.*confident, mean, ntech"):
        aggregate([0.5], "median")
    with pytest.raises(ValueError, match="unknown aggregation strategy"):
        aggregate([], "median")
    with pytest.raises(ValueError, match="unknown aggregation strategy"):
        ensemble([[], []], "median")


@pytest.mark.parametrize("bad", [[0.5, float("nan")], [0.5, 1.5], [-2.0, 0.3]])
def test_invalid_probabilities_are_rejected(bad):
    with pytest.raises(ValueError):
        aggregate(bad, "mean")


# --------------------------------------------------------------------------- ensemble
def test_ensemble_pools_per_model_then_averages():
    frame_model = [0.9] * 6 + [0.95] * 6 + [0.3] * 8  # 20 faces, confident -> 0.925
    sequence_model = [0.3, 0.5]                        # 2 clips, mixed -> 0.4
    assert ensemble([np.array(frame_model), np.array(sequence_model)]) == pytest.approx(0.6625)
    # mean strategy: (0.3 + 0.9) / 2, not the mean of all three values (0.5)
    assert ensemble([[0.2, 0.4], [0.9]], strategy="mean") == pytest.approx(0.6)


def test_ensemble_skips_models_without_predictions():
    assert ensemble([[0.2, 0.4], []], strategy="mean") == pytest.approx(0.3)
    assert ensemble([[], []]) == 0.5
    assert ensemble([]) == 0.5


def test_ensemble_of_one_model_equals_aggregate():
    pred = [0.9, 0.1, 0.6]
    for name in STRATEGIES:
        assert ensemble([pred], name) == aggregate(pred, name)


# --------------------------------------------------------------------------- calibration
def _mean_log_loss(labels, probs):
    return log_loss(labels, np.clip(probs, 1e-15, 1 - 1e-15), labels=[0, 1])


@pytest.fixture(scope="module")
def calibrated_set():
    """Labels drawn from sigmoid(z): sigmoid(z) is calibrated by construction."""
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, size=4000)
    labels = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)
    return z, labels


def test_fit_temperature_softens_over_confident_predictions(calibrated_set):
    z, labels = calibrated_set
    over_confident = 1 / (1 + np.exp(-3 * z))
    T = fit_temperature(over_confident, labels)
    assert T > 1
    assert T == pytest.approx(3.0, rel=0.15)  # it undoes the x3 scaling
    before = _mean_log_loss(labels, over_confident)
    after = _mean_log_loss(labels, apply_temperature(over_confident, T))
    assert after < before
    assert after == pytest.approx(_mean_log_loss(labels, 1 / (1 + np.exp(-z))), abs=0.01)


def test_fit_temperature_sharpens_under_confident_predictions(calibrated_set):
    z, labels = calibrated_set
    under_confident = 1 / (1 + np.exp(-z / 2))
    T = fit_temperature(under_confident, labels)
    assert T < 1
    assert _mean_log_loss(labels, apply_temperature(under_confident, T)) < _mean_log_loss(labels, under_confident)


def test_min_temperature_softens_but_never_sharpens(calibrated_set):
    z, labels = calibrated_set
    under_confident = 1 / (1 + np.exp(-z / 2))  # the free fit sharpens (T about 0.5)
    assert fit_temperature(under_confident, labels, min_temperature=1.0) == 1.0
    assert fit_temperature(under_confident, labels, min_temperature=0.7) == 0.7
    over_confident = 1 / (1 + np.exp(-3 * z))  # softening is left as the free fit finds it
    assert fit_temperature(over_confident, labels, min_temperature=1.0) == pytest.approx(
        fit_temperature(over_confident, labels), rel=1e-4)
    for bad in (0.0, -1.0, float("nan"), 50.0):
        with pytest.raises(ValueError, match="min_temperature"):
            fit_temperature(over_confident, labels, min_temperature=bad)


def test_balanced_fit_minimises_the_balanced_log_loss():
    """With 9 REAL per FAKE the plain fit serves the REALs; the balanced one minimises the
    mean of the two classes' losses (the project's score), and beats the plain T there."""
    from training.engine import balanced_log_loss

    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(900), np.ones(100)].astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1.5, y.size) + np.where(y == 1, 1.0, -1.0)) * 2.5))
    t_plain, t_bal = fit_temperature(p, y), fit_temperature(p, y, balanced=True)
    grid = np.exp(np.linspace(np.log(0.2), np.log(10), 400))
    best = grid[np.argmin([balanced_log_loss(y, apply_temperature(p, t)) for t in grid])]
    assert t_bal == pytest.approx(best, rel=0.02)
    assert balanced_log_loss(y, apply_temperature(p, t_bal)) <= balanced_log_loss(y, apply_temperature(p, t_plain))
    with pytest.raises(ValueError, match="REAL and FAKE"):
        fit_temperature([0.2, 0.3], [0, 0], balanced=True)


def test_fit_temperature_input_errors():
    with pytest.raises(ValueError, match="labels"):
        fit_temperature([0.2, 0.8], [1])
    with pytest.raises(ValueError):
        fit_temperature([], [])


def test_apply_temperature_one_is_identity():
    p = np.array([1e-4, 0.1, 0.5, 0.73, 0.999])
    out = apply_temperature(p, 1.0)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, p, rtol=1e-9)


def test_apply_temperature_by_hand():
    # logit(0.8) = ln 4; T = 2 -> sigmoid(ln 2) = 2/3; T = 0.5 -> sigmoid(ln 16) = 16/17
    np.testing.assert_allclose(apply_temperature([0.8, 0.5], 2.0), [2 / 3, 0.5])
    np.testing.assert_allclose(apply_temperature([0.8], 0.5), [16 / 17])


def test_apply_temperature_clips_zero_and_one():
    out = apply_temperature([0.0, 1.0], 1.0)
    np.testing.assert_allclose(out, [1e-6, 1 - 1e-6])
    assert np.all(np.isfinite(apply_temperature([0.0, 1.0], 0.05)))


@pytest.mark.parametrize("T", [0.0, -1.0, float("nan"), float("inf")])
def test_apply_temperature_rejects_bad_temperature(T):
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature([0.5], T)


def test_calibration_save_load_round_trip(tmp_path):
    path = tmp_path / "sub" / "calibration.json"
    save_calibration(path, 2.5, {"fold": 0, "videos": 120})
    assert load_calibration(path) == 2.5
    assert json.loads(path.read_text()) == {"temperature": 2.5, "fold": 0, "videos": 120}
    save_calibration(path, 1.25)
    assert load_calibration(str(path)) == 1.25
    assert not [p for p in path.parent.iterdir() if p.name != "calibration.json"]  # no temp files left


def test_load_calibration_missing_file_names_path(tmp_path):
    path = tmp_path / "nowhere" / "calibration.json"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_calibration(path)


@pytest.mark.parametrize("text", ["{not json", '{"T": 2}', "[2.0]", '{"temperature": -1}',
                                  '{"temperature": "hot"}'])
def test_load_calibration_invalid_file_names_path(tmp_path, text):
    path = tmp_path / "broken_calibration.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="broken_calibration.json"):
        load_calibration(path)


def test_save_calibration_rejects_clashing_meta(tmp_path):
    with pytest.raises(ValueError):
        save_calibration(tmp_path / "c.json", 2.0, {"temperature": 3.0})


def test_calibrate_tool_links_a_fold_and_fits_its_predictions(tmp_path):
    """run_all.sh's calibration: the fold's videos are linked with their labels (and only
    they), 6_predict's CSV on that folder is matched back, and T lands in the JSON."""
    import pandas as pd

    from tools.calibrate import main as calibrate

    data, work = tmp_path / "data", tmp_path / "work"
    labels = {"a": "REAL", "b": "FAKE", "c": "REAL", "d": "FAKE", "e": "REAL"}
    for part in ("p1", "p2"):
        (data / part).mkdir(parents=True)
        (data / part / "metadata.json").write_text(json.dumps({f"{k}.mp4": {"label": v} for k, v in labels.items()}))
        for k in labels:
            (data / part / f"{k}.mp4").write_bytes(b"not decoded here")
    work.mkdir()
    rows = [{"video": f"{part}/{k}", "fold": int(k in "abc" and part == "p1")} for part in ("p1", "p2") for k in labels]
    pd.DataFrame(rows).to_csv(work / "folds.csv", index=False)

    links = tmp_path / "val"
    assert calibrate(["--link-fold", str(links), "--work-dir", str(work), "--data-dir", str(data), "--fold", "1"]) == 0
    linked = sorted(p.relative_to(links).as_posix() for p in links.rglob("*.mp4"))
    assert linked == ["p1/a.mp4", "p1/b.mp4", "p1/c.mp4"]
    assert (links / "p1" / "b.mp4").resolve() == (data / "p1" / "b.mp4").resolve()
    assert json.loads((links / "p1" / "metadata.json").read_text()) == {
        "a.mp4": {"label": "REAL"}, "b.mp4": {"label": "FAKE"}, "c.mp4": {"label": "REAL"}}

    sub = tmp_path / "val.csv"  # an over-confident ensemble: right on 2 of 3, a confident mistake on c
    pd.DataFrame({"filename": ["p1/a.mp4", "p1/b.mp4", "p1/c.mp4"], "label": [0.01, 0.99, 0.97]}).to_csv(sub, index=False)
    out = tmp_path / "calibration.json"
    assert calibrate(["--balanced", "--submission", str(sub), "--data-dir", str(links), "--output", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["fit"] == "balanced_log_loss" and record["videos"] == 3 and record["temperature"] > 1
    assert record["balanced_log_loss_after"] < record["balanced_log_loss_before"]
    assert load_calibration(out) == record["temperature"] and record["min_temperature"] is None
    # run_all's bound: predictions that a free fit would sharpen keep T = 1
    sub.write_text("filename,label\np1/a.mp4,0.4\np1/b.mp4,0.6\np1/c.mp4,0.45\n")
    assert calibrate(["--balanced", "--min-temperature", "1", "--submission", str(sub), "--data-dir", str(links),
                      "--output", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["temperature"] == 1.0 and record["min_temperature"] == 1.0
    assert calibrate(["--balanced", "--min-temperature", "0", "--submission", str(sub), "--data-dir", str(links),
                      "--output", str(out)]) == 1
    # a fold that does not exist is a clear error, not an empty folder
    assert calibrate(["--link-fold", str(links), "--work-dir", str(work), "--data-dir", str(data), "--fold", "7"]) == 1
