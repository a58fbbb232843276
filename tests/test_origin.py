"""run_all reuses or resumes a checkpoint only when it was trained from this run's work dir."""
import subprocess
import sys

import torch

from conftest import REPO
from training.origin import main


def _ckpt(path, **extra):
    torch.save({"config": {}, "state_dict": {}, "epoch": 0, "metrics": {}, **extra}, path)
    return str(path)


def test_a_checkpoint_of_another_work_dir_is_refused(tmp_path, capsys):
    here, other = tmp_path / "work" / "mine", tmp_path / "work" / "sample"
    here.mkdir(parents=True)
    assert main([_ckpt(tmp_path / "a.pt", work_dir=str(here.resolve())), str(here)]) == 0
    assert main([_ckpt(tmp_path / "b.pt", work_dir=str(here / ".." / "mine")), str(here)]) == 0  # same place
    assert main([_ckpt(tmp_path / "c.pt", work_dir=str(other)), str(here)]) == 1
    err = capsys.readouterr().err
    assert str(other) in err and str(here.resolve()) in err
    assert main([_ckpt(tmp_path / "d.pt"), str(here)]) == 0  # saved before the record: reused, with a warning
    assert "records no work dir" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.pt"), str(here)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_the_cli_exit_code_stops_run_all(tmp_path):
    stale = _ckpt(tmp_path / "x_fold0_best.pt", work_dir=str(tmp_path / "sample"))
    proc = subprocess.run([sys.executable, "-m", "training.origin", stale, str(tmp_path / "mine")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "was trained from" in proc.stderr


def test_an_unfinished_last_checkpoint_is_resumed_even_with_a_best(tmp_path, capsys):
    """run_all trains on from a _last.pt that stopped early (a _best.pt exists from epoch 0 on)."""
    assert main(["--unfinished", _ckpt(tmp_path / "killed.pt", finished=False)]) == 0
    assert main(["--unfinished", _ckpt(tmp_path / "done.pt", finished=True)]) == 1
    assert main(["--unfinished", _ckpt(tmp_path / "old.pt")]) == 1  # saved before the record: done, as before
    assert main(["--unfinished", str(tmp_path / "missing.pt")]) == 1
    assert "does not exist" in capsys.readouterr().err
