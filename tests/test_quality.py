"""bench/quality.py's leave-one-method-out protocol: what is held out, what is trained on."""
import importlib.util

import numpy as np
import pandas as pd
import pytest

from conftest import REPO


def _bench_module(name: str):
    """bench/NAME.py as a module, registered under NAME so that the bench scripts that import it
    (`from quality import ...`) get this copy."""
    import sys

    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sys.modules.setdefault(name, module)


@pytest.fixture(scope="module")
def quality():
    return _bench_module("quality")


def test_method_families(quality):
    assert quality.method_family("SadTalker (one image + audio, GFPGAN)") == "SadTalker"
    assert quality.method_family("SadTalker-Video-Lip-Sync (DAIN 50 fps)") == "SadTalker-Video-Lip-Sync"
    assert quality.method_family("Wav2Lip") == "Wav2Lip"
    assert quality.method_family(None) == "unknown"


def _df(rows):
    return pd.DataFrame([{"video": v, "file": f"crops/{v}/0_0.png", "label": y, "original": o, "frame": 0,
                          "face": 0, "fold": k} for v, y, o, k in rows])


def test_held_out_method_its_folders_and_the_real_reserve_never_train(quality):
    df = _df([("swap/a", 0, "", 1), ("swap/a_fake", 1, "swap/a", 1), ("swap/b", 0, "", 0),
              ("swap/b_fake", 1, "swap/b", 0),
              ("lips/r", 0, "", 2), ("lips/f1", 1, "lips/r", 2), ("lips/f2", 1, "", 3),
              ("heads/r", 0, "", 4), ("avatar/f", 1, "", 1)])
    methods = {"swap/a": "REAL", "swap/b": "REAL", "lips/r": "REAL", "heads/r": "REAL",
               "swap/a_fake": "Swap", "swap/b_fake": "Swap", "lips/f1": "Wav2Lip", "lips/f2": "Retalk",
               "avatar/f": "Avatar"}
    splits = quality.lomo_splits(df, methods, reserve_fold=0)
    assert set(splits) == {"Swap", "Wav2Lip", "Retalk", "Avatar"}
    for m, (test, train) in splits.items():
        assert not set(test) & set(train)
        assert "swap/b" in test and "swap/b" not in train and "swap/b_fake" not in train  # the reserve fold
        assert all(methods[v] != m for v in train)
    test, train = splits["Wav2Lip"]
    assert set(test) == {"lips/f1", "lips/r", "swap/b"}
    assert "lips/f2" not in train  # another method, but the held-out folder's people
    assert set(train) == {"swap/a", "swap/a_fake", "heads/r", "avatar/f"}
    test, train = splits["Avatar"]  # a folder without reals: scored against the reserve
    assert set(test) == {"avatar/f", "swap/b"}


def test_round_dir_links_artifacts_and_writes_its_folds(quality, tmp_path):
    work = tmp_path / "work"
    (work / "crops").mkdir(parents=True)
    df = _df([("x/a", 0, "", 0), ("x/b", 1, "x/a", 0), ("y/c", 0, "", 1)])
    rd = quality.round_dir(work, tmp_path / "round", df, ["x/a", "x/b"], ["y/c"])
    assert (rd / "crops").is_symlink() and (rd / "crops").resolve() == (work / "crops").resolve()
    folds = pd.read_csv(rd / "folds.csv")
    assert dict(zip(folds.video, folds.fold)) == {"x/a": 0, "x/b": 0, "y/c": 1}


def test_video_methods_reads_metadata(quality, tmp_path):
    from conftest import write_metadata

    write_metadata(tmp_path / "d", {"a.mp4": {"label": "REAL", "method": "none"},
                                    "b.mp4": {"label": "FAKE", "original": "a.mp4", "method": "SadTalker (still)"}})
    for n in "ab":
        (tmp_path / "d" / f"{n}.mp4").write_bytes(b"\0")
    assert quality.video_methods(tmp_path) == {"d/a": "REAL", "d/b": "SadTalker"}


def test_calibration_split_takes_whole_training_identities_of_one_fold(quality):
    df = _df([("a", 0, "", 1), ("a_f", 1, "a", 1), ("b", 0, "", 2), ("b_f", 1, "b", 2), ("c", 0, "", 1),
              ("r", 0, "", 0)])
    cal, rest = quality.calibration_split(df, ["a", "a_f", "b", "b_f", "c"], cal_fold=1)
    assert cal == ["a", "a_f", "c"] and rest == ["b", "b_f"]
    # a fold without both classes cannot fit a temperature: nothing is held back
    assert quality.calibration_split(df, ["b", "b_f", "c"], cal_fold=1) == ([], ["b", "b_f", "c"])


def test_calibrated_scores_keep_their_ranking(quality):
    cal = pd.DataFrame({"label": [0, 0, 1, 1], "pred": [0.01, 0.9, 0.99, 0.2]})  # over-confident
    scores = pd.DataFrame({"video": list("wxyz"), "label": [0, 1, 0, 1], "pred": [0.05, 0.95, 0.3, 0.7]})
    out, t = quality.calibrated(scores, cal)
    assert t > 1 and list(out.video) == list("wxyz")
    assert (out.pred.rank() == scores.pred.rank()).all() and (abs(out.pred - 0.5) < abs(scores.pred - 0.5)).all()


def test_size_shortcut_reads_face_size_against_labels_and_scores(quality):
    scores = pd.DataFrame({"label": [0, 0, 1, 1], "pred": [0.2, 0.3, 0.6, 0.9], "face_size": [400, 300, 200, 100.0]})
    out = quality.size_shortcut(scores)
    assert out["face_size_auc"] == 0.0  # every fake's face is smaller than every real's
    assert out["score_size_spearman"] == pytest.approx(-1.0)  # and the score follows the size exactly


@pytest.fixture(scope="module")
def quality_ensemble(quality):
    return _bench_module("quality_ensemble")


def _run(tmp_path, name, methods):
    """A bench/quality.py --out-dir with one scores.csv per method: {method: [(video, label, pred)]}."""
    for m, rows in methods.items():
        (tmp_path / name / m).mkdir(parents=True)
        pd.DataFrame([{"video": v, "label": y, "pred": p, "face_size": 100.0 + i} for i, (v, y, p) in enumerate(rows)]
                     ).to_csv(tmp_path / name / m / "scores.csv", index=False)
    (tmp_path / name / "all" / "weights").mkdir(parents=True)  # the dev round: no scores.csv
    return tmp_path / name


def test_ensemble_of_quality_runs_averages_member_probabilities(quality_ensemble, tmp_path):
    """The ensemble's video score is 6_predict's: the (weighted) mean of the members'
    probabilities; an AUC can rise above both members' when their errors differ."""
    a = _run(tmp_path, "a", {"Swap": [("r1", 0, 0.2), ("r2", 0, 0.7), ("f1", 1, 0.6), ("f2", 1, 0.9)],
                             "Lips": [("r1", 0, 0.1), ("f3", 1, 0.3)]})
    b = _run(tmp_path, "b", {"Swap": [("f2", 1, 0.5), ("r2", 0, 0.1), ("f1", 1, 0.8), ("r1", 0, 0.6)],
                             "Avatar": [("r1", 0, 0.5), ("f4", 1, 0.4)]})
    alone = quality_ensemble.ensemble_report([a])
    assert alone["methods"]["Swap"]["auc"] == 0.75 and alone["skipped"] == []
    out = quality_ensemble.ensemble_report([a, b])
    assert out["skipped"] == ["Avatar", "Lips"] and list(out["methods"]) == ["Swap"]
    assert out["methods"]["Swap"]["auc"] == 1.0 and out["mean_auc"] == 1.0  # 0.4, 0.4 vs 0.7, 0.7
    assert out["methods"]["Swap"]["mean_fake_score"] == pytest.approx(0.7)
    weighted = quality_ensemble.ensemble_report([a, b], [3, 1])
    assert weighted["methods"]["Swap"]["mean_real_score"] == pytest.approx((0.75 * 0.45 + 0.25 * 0.35))
    with pytest.raises(ValueError, match="weights"):
        quality_ensemble.ensemble_report([a, b], [1])


def test_ensemble_refuses_runs_of_different_splits(quality_ensemble, tmp_path):
    a = _run(tmp_path, "a", {"Swap": [("r1", 0, 0.2), ("f1", 1, 0.6)]})
    b = _run(tmp_path, "b", {"Swap": [("r9", 0, 0.2), ("f1", 1, 0.6)]})
    c = _run(tmp_path, "c", {"Swap": [("r1", 1, 0.2), ("f1", 1, 0.6)]})
    with pytest.raises(ValueError, match="not the same split"):
        quality_ensemble.ensemble_report([a, b])
    with pytest.raises(ValueError, match="labels"):
        quality_ensemble.ensemble_report([a, c])
    with pytest.raises(FileNotFoundError, match="all_fold0_last.pt"):
        quality_ensemble.dev_checkpoints([a])
    (tmp_path / "a" / "all" / "calibration.json").write_text("{}")
    with pytest.raises(ValueError, match="--calibrate"):
        quality_ensemble.dev_checkpoints([a])
    with pytest.raises(FileNotFoundError, match="scores.csv"):
        quality_ensemble.ensemble_report([tmp_path / "empty"])
    (tmp_path / "b" / "Swap" / "cal").mkdir()
    with pytest.raises(ValueError, match="--calibrate"):
        quality_ensemble.ensemble_report([b])


def test_teacher_run_gives_each_round_its_own_teacher(quality, tmp_path):
    """A distilled student's teacher in a round is the teacher config's model of that round
    (never one trained on the held-out method)."""
    cfg = {"name": "s", "distill": {"teacher": "weights/lite0_cpu_fold0_best.pt", "alpha": 0.5}}
    assert quality.with_teacher(cfg, None, "Swap") is cfg
    for slug, name in (("Swap", "lomo_Swap"), ("all", "all")):
        (tmp_path / slug / "weights").mkdir(parents=True)
        for kind in ("best", "last"):
            (tmp_path / slug / "weights" / f"{name}_fold0_{kind}.pt").write_bytes(b"")
    got = quality.with_teacher(cfg, tmp_path, "Swap")
    assert got["distill"] == {"teacher": str((tmp_path / "Swap/weights/lomo_Swap_fold0_last.pt").resolve()),
                              "alpha": 0.5}
    assert cfg["distill"]["teacher"] == "weights/lite0_cpu_fold0_best.pt"  # not modified in place
    (tmp_path / "all" / "calibration.json").write_text("{}")  # a --calibrate run scored its best checkpoint
    assert quality.with_teacher(cfg, tmp_path, "all")["distill"]["teacher"].endswith("all_fold0_best.pt")
    with pytest.raises(FileNotFoundError, match="lomo_Lips_fold0_last.pt"):
        quality.with_teacher(cfg, tmp_path, "Lips")
    with pytest.raises(ValueError, match="distillation config"):
        quality.with_teacher({"name": "x"}, tmp_path, "Swap")


def test_reuse_scores_an_earlier_runs_checkpoint_or_says_what_is_missing(quality, tmp_path):
    (tmp_path / "weights").mkdir()
    last = tmp_path / "weights" / "lomo_X_fold0_last.pt"
    last.write_bytes(b"")
    assert quality.reused(tmp_path, "lomo_X", "last") == last
    with pytest.raises(FileNotFoundError, match="--reuse best: .*lomo_X_fold0_best.pt is missing"):
        quality.reused(tmp_path, "lomo_X", "best")


def test_reuse_checks_the_earlier_round_was_made_the_same_way(quality, tmp_path):
    rd = tmp_path / "AniPortrait"
    with pytest.raises(FileNotFoundError, match="not a round of an earlier run"):
        quality.earlier_round(rd, False, "cal")
    rd.mkdir()
    (rd / "folds.csv").write_text("video,fold\n")
    assert quality.earlier_round(rd, False, "cal") == rd
    with pytest.raises(ValueError, match="trained without a calibration fold, and this run asks with one"):
        quality.earlier_round(rd, True, "cal")
    (rd / "cal").mkdir()
    assert quality.earlier_round(rd, True, "cal") == rd
    with pytest.raises(ValueError, match="trained with a calibration fold"):
        quality.earlier_round(rd, False, "cal")


def test_bootstrap_redraws_each_class_and_pairs_the_runs(quality):
    """Each replicate keeps the class counts, so a perfectly separated set stays at AUC 1;
    the replicates centre on the set's own AUC and balanced log loss; every run sees the same
    draws, so a run against itself differs by exactly 0 and a rank-preserving change of the
    scores leaves every replicate's AUC as it was."""
    rng = np.random.default_rng(3)
    y = np.array([1] * 12 + [0] * 30)
    p = np.clip(rng.normal(0.45 + 0.15 * y, 0.15), 0.01, 0.99)
    auc, bll = quality.set_replicates(y, [p, p ** 2, np.where(y == 1, 0.9, 0.1)], n_boot=500, seed=1)
    assert auc.shape == bll.shape == (3, 500)
    full = quality.metrics(y, p)
    assert abs(auc[0].mean() - full["auc"]) < 0.02 and abs(bll[0].mean() - full["balanced_log_loss"]) < 0.02
    assert np.array_equal(auc[0], auc[1]) and not np.array_equal(bll[0], bll[1])  # p**2: same ranks
    assert (auc[2] == 1.0).all() and quality.ci95(auc[2]) == [1.0, 1.0]
    lo, hi = quality.ci95(auc[0])
    assert lo < full["auc"] < hi and hi - lo > 0.1  # 12 fakes: a wide interval
    with pytest.raises(ValueError, match="both classes"):
        quality.set_replicates([1, 1], [[0.2, 0.3]])


def test_mean_replicates_average_the_sets_and_leave_one_class_sets_out(quality):
    good = pd.DataFrame({"video": ["r1", "r2", "f1", "f2"], "label": [0, 0, 1, 1], "pred": [0.1, 0.2, 0.8, 0.9]})
    bad = pd.DataFrame({"video": ["r1", "r2", "f1", "f2"], "label": [0, 0, 1, 1], "pred": [0.8, 0.9, 0.1, 0.2]})
    fakes_only = pd.DataFrame({"video": ["f9"], "label": [1], "pred": [0.5]})
    auc, _ = quality.mean_replicates({"A": [good], "B": [bad], "C": [fakes_only]}, n_boot=200)
    assert auc.shape == (1, 200) and np.allclose(auc, 0.5)  # 1.0 and 0.0, C left out
    with pytest.raises(ValueError, match="both classes"):
        quality.mean_replicates({"C": [fakes_only]})


def test_rounds_that_share_reals_redraw_them_together(quality):
    """Every round holds out the same real reserve: one draw of those reals moves every
    round's AUC the same way, so the mean's interval is wider than independent draws would
    make it. At weight 1 everywhere the weighted metrics are metrics()'."""
    rng = np.random.default_rng(0)
    reals = [(f"r{i}", 0, float(x)) for i, x in enumerate(rng.uniform(0.1, 0.9, 20))]
    rounds = {m: [pd.DataFrame(reals + [(f"{m}{i}", 1, float(x)) for i, x in enumerate(rng.uniform(0.3, 1.0, 10))],
                               columns=["video", "label", "pred"])] for m in ("A", "B", "C")}
    auc, bll, per = quality.mean_replicates(rounds, n_boot=3000, seed=1, per_set=True)
    independent = np.mean([quality.set_replicates(f[0].label, [f[0].pred], 3000, seed=k)[0][0]
                           for k, f in enumerate(rounds.values())], axis=0)
    assert auc.std() > 1.3 * independent.std()  # three rounds on one draw of reals vs three draws
    assert np.corrcoef(per["A"][0][0], per["B"][0][0])[0, 1] > 0.25  # independent draws: about 0
    for k in range(20):  # integer weights = copies of the videos, ties included
        pf, pr = np.round(rng.uniform(0, 1, 7), 1), np.round(rng.uniform(0, 1, 9), 1)
        wf, wr = rng.integers(0, 4, (1, 7)), rng.integers(0, 4, (1, 9))
        wf[0, 0] = wr[0, 0] = 1
        y, p = [1] * int(wf.sum()) + [0] * int(wr.sum()), np.concatenate([np.repeat(pf, wf[0]), np.repeat(pr, wr[0])])
        a_, b_ = quality._weighted(pf, pr, wf.astype(float), wr.astype(float))
        m = quality.metrics(y, p)
        assert a_[0] == pytest.approx(m["auc"]) and b_[0] == pytest.approx(m["balanced_log_loss"])
    nan = quality._weighted(np.array([0.7]), np.array([0.2, 0.4]), np.ones((2, 1)), np.array([[0.0, 0.0], [1.0, 1.0]]))
    assert np.isnan(nan[0][0]) and nan[0][1] == 1.0  # no real weight: NaN, which ci95 leaves out
    assert quality.ci95([np.nan, 0.5, 0.5]) == [0.5, 0.5] and quality.ci95([np.nan]) == [None, None]
    f = rounds["A"][0]
    ones = np.ones((1, 10)), np.ones((1, 20))
    w_auc, w_bll = quality._weighted(f.pred[f.label == 1].to_numpy(), f.pred[f.label == 0].to_numpy(), *ones)
    full = quality.metrics(f.label, f.pred)
    assert w_auc[0] == pytest.approx(full["auc"]) and w_bll[0] == pytest.approx(full["balanced_log_loss"])


@pytest.fixture(scope="module")
def quality_compare(quality_ensemble):
    return _bench_module("quality_compare")


def test_compare_pairs_two_runs_on_the_same_videos(quality_compare, tmp_path):
    """B ranks every fake above every real, A does not: the paired interval of B - A lies
    above 0 and B is ahead in every replicate; sides of several runs (seeds) compare their
    means; other splits are refused; the dev rounds compare when both runs have one."""
    reals = [(f"r{i}", 0, 0.3 + 0.04 * i) for i in range(10)]
    fa = [(f"f{i}", 1, 0.35 + 0.04 * i) for i in range(6)]
    fb = [(f"f{i}", 1, 0.8 + 0.01 * i) for i in range(6)]
    a = _run(tmp_path, "a", {"Swap": reals + fa, "Lips": reals[:4] + fa[:2]})
    b = _run(tmp_path, "b", {"Swap": reals + fb, "Lips": reals[:4] + fb[:2]})
    a2 = _run(tmp_path, "a2", {"Swap": reals + fb, "Lips": reals[:4] + fa[:2], "Extra": reals[:2] + fa[:1]})
    out = quality_compare.compare_runs([a], [b], n_boot=300)
    sw = quality_compare.metrics([y for _, y, _ in reals + fa], [p for _, _, p in reals + fa])["auc"]
    assert out["methods"]["Swap"]["auc"] == [round(sw, 4), 1.0]
    assert out["diff"] == pytest.approx(1.0 - out["mean_auc"][0], abs=1e-4) and out["diff"] > 0
    assert out["diff_ci95"][0] > 0 and out["p_b_ahead"] == 1.0 and out["bll_diff"] < 0
    assert "dev" not in out and out["skipped"] == []
    same = quality_compare.compare_runs([a], [a], n_boot=300)
    assert same["diff"] == 0 and same["diff_ci95"] == [0.0, 0.0] and same["p_b_ahead"] == 0.5
    group = quality_compare.compare_runs([a, a2], [b], n_boot=300)
    assert group["skipped"] == ["Extra"] and len(group["runs_mean_auc"][0]) == 2
    assert group["mean_auc"][0] == pytest.approx(np.mean(group["runs_mean_auc"][0]), abs=1e-4)
    # two seeds that disagree: A's interval spans both (its runs are redrawn too), wider than one run's
    lo, hi = group["mean_auc_ci95"][0]
    one = out["mean_auc_ci95"][0]
    assert hi - lo > one[1] - one[0] and lo <= min(group["runs_mean_auc"][0]) and hi >= max(group["runs_mean_auc"][0])
    for d, score in ((a, 0.4), (b, 0.7)):
        pd.DataFrame({"label": [0, 0, 1], "pred": [0.5, 0.3, score], "video": ["x", "y", "z"]}
                     ).to_csv(d / "all" / "dev_scores.csv", index=False)
    dev = quality_compare.compare_runs([a], [b], n_boot=300)["dev"]
    assert dev["auc"] == [0.5, 1.0] and dev["diff"] == 0.5
    assert "dev_skipped" in quality_compare.compare_runs([a], [b, a2], n_boot=300)
    c = _run(tmp_path, "c", {"Swap": reals[1:] + fb})
    with pytest.raises(ValueError, match="not the same split"):
        quality_compare.compare_runs([a], [c])
    with pytest.raises(ValueError, match="no held-out method"):
        quality_compare.compare_runs([a], [_run(tmp_path, "d", {"Other": reals[:2] + fa[:1]})])


def test_quality_reports_intervals(quality_ensemble, tmp_path):
    a = _run(tmp_path, "a", {"Swap": [("r1", 0, 0.2), ("r2", 0, 0.7), ("f1", 1, 0.6), ("f2", 1, 0.9)]})
    out = quality_ensemble.ensemble_report([a])
    lo, hi = out["mean_auc_ci95"]
    assert 0 <= lo <= out["mean_auc"] <= hi <= 1 and hi > lo
