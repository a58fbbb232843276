"""Scale-out: shards from SLURM array variables, the sbatch scripts, and a sharded run of
steps 0-4 that gives exactly the unsharded artifacts."""
import argparse
import json
import os
import socket
import stat
import subprocess

import numpy as np
import pytest

from conftest import REPO
from preprocessing.runner import add_common_args, options_from_args, slurm_shard


def parse(argv, env):
    args = add_common_args(argparse.ArgumentParser()).parse_args(["--data-dir", "d", "--work-dir", "w", *argv])
    old = dict(os.environ)
    try:
        for k in [k for k in os.environ if k.startswith("SLURM_")]:
            del os.environ[k]
        os.environ.update(env)
        opts = options_from_args(args)
    finally:
        os.environ.clear()
        os.environ.update(old)
    return opts.part, opts.num_parts


def test_shard_comes_from_the_slurm_array_and_explicit_options_win():
    assert parse([], {}) == (0, 1)
    assert parse([], {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}) == (2, 3)
    # --array=1-4: ids 1..4 are shards 0..3
    array_1_4 = {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4",
                 "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4"}
    assert parse([], array_1_4) == (3, 4)
    assert parse(["--part", "1", "--num-parts", "2"], array_1_4) == (1, 2)
    assert parse(["--part", "1", "--num-parts", "2"], {}) == (1, 2)


def test_unusable_shard_settings_are_refused_clearly():
    with pytest.raises(ValueError, match="contiguous"):  # --array=0-6:2 has 4 tasks over 0..6
        slurm_shard({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4",
                     "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "6"})
    with pytest.raises(ValueError, match="unusable"):
        slurm_shard({"SLURM_ARRAY_TASK_ID": "2"})
    with pytest.raises(ValueError, match="needs --part"):
        parse(["--num-parts", "3"], {})
    with pytest.raises(ValueError, match="--part must be in"):
        parse(["--part", "3", "--num-parts", "3"], {})
    assert slurm_shard({}) is None


def test_sbatch_scripts_parse_and_refuse_missing_arguments():
    for name in ("preprocess.sbatch", "folds.sbatch", "train.sbatch"):
        script = REPO / "scripts" / "slurm" / name
        assert subprocess.run(["bash", "-n", script]).returncode == 0
        proc = subprocess.run(["bash", script], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 2 and "usage:" in proc.stderr


STEP_OUTPUTS = ("boxes", "crops", "landmarks", "diffs", "face_descriptors", "folds.csv")


def artifacts(work):
    """Every artifact steps 0-4 write under work (errors files aside; other tests also train
    into the shared sample work dir, and its logs are not preprocessing's): path -> file."""
    return {p.relative_to(work).as_posix(): p for p in sorted(work.rglob("*"))
            if p.is_file() and p.relative_to(work).parts[0] in STEP_OUTPUTS and "_errors" not in p.name}


@pytest.mark.slow
def test_three_sharded_array_tasks_give_the_unsharded_artifacts(sample_dir, sample_work, tmp_path):
    """preprocess.sbatch as three SLURM array tasks (--array=1-3, one after another), then
    folds.sbatch: the same files, byte for byte (PNGs) or value for value (JSON, npy)."""
    work, _ = sample_work
    sharded = tmp_path / "work"
    for task in (1, 2, 3):
        env = dict(os.environ, SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_COUNT="3",
                   SLURM_ARRAY_TASK_MIN="1", SLURM_ARRAY_TASK_MAX="3", CLIP_LEN="1", WORKERS="1",
                   EXTRA_ARGS="--no-progress", OMP_NUM_THREADS="2")
        proc = subprocess.run(["bash", "scripts/slurm/preprocess.sbatch", str(sample_dir), str(sharded)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "[0_detect_faces]" in proc.stdout
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="3", NUM_FOLDS="2",
               EXTRA_ARGS="--no-progress")  # a leftover array id must not shard step 4
    proc = subprocess.run(["bash", "scripts/slurm/folds.sbatch", str(sample_dir), str(sharded)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    want, got = artifacts(work), artifacts(sharded)
    assert sorted(got) == sorted(want)
    assert any(k.startswith("crops/") for k in want) and any(k.startswith("diffs/") for k in want)
    assert "folds.csv" in want
    for rel, path in want.items():
        if path.suffix == ".npy":
            np.testing.assert_array_equal(np.load(path), np.load(got[rel]), err_msg=rel)
        elif path.suffix == ".json":
            assert json.loads(path.read_text()) == json.loads(got[rel].read_text()), rel
        else:
            assert path.read_bytes() == got[rel].read_bytes(), rel


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_train_sbatch_runs_a_c10d_rendezvous_ddp_job(sample_work, tmp_path):
    """train.sbatch under stand-ins for srun and scontrol (one node, two CPU processes):
    torchrun's c10d rendezvous on the 'head node' and 5_train.py's DDP run to the end."""
    work, _ = sample_work
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # srun runs its command once (one task on the one node), dropping its own options
    (bin_dir / "srun").write_text('#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text('#!/usr/bin/env bash\necho 127.0.0.1\n')
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({
        "name": "tiny", "network": "DeepFakeClassifier", "encoder": "tf_efficientnet_lite0", "pretrained": False,
        "size": 64, "batches_per_epoch": 2,
        "optimizer": {"type": "AdamW", "batch_size": 4, "learning_rate": 1e-3,
                      "schedule": {"type": "cosine", "epochs": 1}},
        "normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "losses": {"BalancedBinaryCrossentropy": 1},
        "data": {"dataset": "frames", "workers": 0}}))
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_NODELIST="node1",
               SLURM_JOB_NUM_NODES="1", SLURM_JOB_ID="4242", GPUS_PER_NODE="2", RDZV_PORT=str(_free_port()),
               OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", "scripts/slurm/train.sbatch", str(config), str(work), "--fold", "0",
                           "--device", "cpu", "--weights-dir", str(tmp_path / "w"), "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 nodes x 2 processes, rendezvous 127.0.0.1" in proc.stderr
    assert (tmp_path / "w" / "tiny_fold0_best.pt").exists()
