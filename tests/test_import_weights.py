"""Published weights (#9): selim's released layout imports into this project's checkpoint
and computes exactly what his model computes with the same weights."""
import hashlib

import pytest
import timm
import torch

from training.engine import load_checkpoint, model_from_checkpoint
from training.imports import encoder_from_name

HIS_NAME = "final_111_DeepFakeClassifier_tf_efficientnet_b0_ns_0_36"  # his naming, a small encoder


@pytest.fixture(scope="module")
def his_file(tmp_path_factory):
    """A random-weight checkpoint in selim's exact layout: DataParallel's `module.` prefix,
    timm's EfficientNet with its 1000-class ImageNet classifier, his `fc` head."""
    torch.manual_seed(0)
    encoder = timm.create_model("tf_efficientnet_b0.ns_jft_in1k", pretrained=False, drop_path_rate=0.2).eval()
    fc = torch.nn.Linear(encoder.num_features, 1)
    state = {f"module.encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({"module.fc.weight": fc.weight.detach().clone(), "module.fc.bias": fc.bias.detach().clone()})
    path = tmp_path_factory.mktemp("selim") / HIS_NAME
    torch.save({"state_dict": state, "epoch": 36, "bce_best": 0.1934}, path)

    def his_forward(x):  # his DeepFakeClassifier.forward, weights loaded by hand
        with torch.no_grad():
            return fc(torch.nn.functional.adaptive_avg_pool2d(encoder.forward_features(x), 1).flatten(1))
    return path, his_forward


def test_names_map_to_timm_encoders():
    assert encoder_from_name("final_111_DeepFakeClassifier_tf_efficientnet_b7_ns_0_36") == \
        "tf_efficientnet_b7.ns_jft_in1k"
    assert encoder_from_name("final_999_DeepFakeClassifier_tf_efficientnet_b7_ns_0_23.pt") == \
        "tf_efficientnet_b7.ns_jft_in1k"
    assert encoder_from_name("some_weights.pth") is None


def test_imported_on_the_fly_gives_his_logits(his_file):
    path, his_forward = his_file
    model, cfg = model_from_checkpoint(path)
    assert cfg["encoder"] == "tf_efficientnet_b0.ns_jft_in1k" and cfg["size"] == 380
    assert cfg["normalize"]["mean"] == [0.485, 0.456, 0.406] and cfg["data"]["resize"] == "isotropic"
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), his_forward(x), atol=1e-5)


def test_import_tool_writes_a_fingerprinted_checkpoint_with_its_provenance(his_file, tmp_path):
    from tools.import_weights import main

    path, his_forward = his_file
    out = tmp_path / "selim_111.pt"
    assert main([str(path), str(out), "--source", "https://example.org/weights"]) == 0
    ckpt = load_checkpoint(out)
    imp = ckpt["imported"]
    assert imp["format"] == "selim" and imp["source"] == "https://example.org/weights"
    assert imp["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert imp["original_epoch"] == 36 and ckpt["metrics"]["bce_best"] == pytest.approx(0.1934)
    assert imp["preprocessing"]["size"] == 380 and ckpt["fingerprint"]["logits"]
    assert "encoder.classifier.weight" not in ckpt["state_dict"] and "head.weight" in ckpt["state_dict"]
    model, _ = model_from_checkpoint(out)  # the fingerprint is verified here
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), his_forward(x), atol=1e-5)


def test_a_file_in_no_known_layout_is_refused_with_the_reason(tmp_path):
    from tools.import_weights import main

    bad = tmp_path / "final_1_DeepFakeClassifier_tf_efficientnet_b0_ns_0_1"
    torch.save({"state_dict": {"encoder.conv_stem.weight": torch.zeros(3), "fc.weight": torch.zeros(1, 3),
                               "fc.bias": torch.zeros(1)}}, bad)
    assert main([str(bad), str(tmp_path / "o.pt")]) == 1 and not (tmp_path / "o.pt").exists()
    with pytest.raises(ValueError, match="do not fit"):
        model_from_checkpoint(bad)
    nameless = tmp_path / "weights.pth"
    torch.save({"head.weight": torch.zeros(1, 3)}, nameless)
    with pytest.raises(ValueError, match="which encoder"):
        model_from_checkpoint(nameless)


# --------------------------------------------------------------------------- download
@pytest.fixture()
def serve(tmp_path):
    """serve(folder) -> base URL of a local HTTP server (127.0.0.1) over that folder."""
    import functools
    import http.server
    import threading

    servers = []

    def start(folder):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a, **k: None
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"
    yield start
    for s in servers:
        s.shutdown()


def _script(args, env_over, timeout=300):
    import os
    import subprocess

    from conftest import REPO

    env = dict(os.environ, **env_over)
    return subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.slow
def test_download_selim_script_downloads_imports_and_lists(his_file, serve, tmp_path):
    from helpers import portrait_clip

    path, his_forward = his_file
    base = serve(path.parent)
    weights = tmp_path / "w"
    env = {"SELIM_BASE_URL": base, "SELIM_NAMES": HIS_NAME, "WEIGHTS_DIR": str(weights)}
    proc = _script(["weights/download_selim.sh"], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = (weights / "selim_ensemble.txt").read_text().split()
    assert listed == [str(weights / "selim" / f"{HIS_NAME}.pt")]
    assert (weights / "selim" / "original" / HIS_NAME).read_bytes() == path.read_bytes()
    assert load_checkpoint(listed[0])["imported"]["source"] == f"{base}/{HIS_NAME}"
    again = _script(["weights/download_selim.sh"], env)  # everything there: nothing fetched again
    assert again.returncode == 0 and "exists: kept" in again.stderr

    videos = tmp_path / "videos"
    videos.mkdir()
    portrait_clip(videos / "a.mp4", frames=8)
    out = tmp_path / "sub.csv"
    proc = _script(["predict_submission.sh", str(videos), str(out)],
                   {"ENSEMBLE": "selim", "WEIGHTS_DIR": str(weights), "EXTRA_ARGS": "--no-progress --frames 4"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_text().splitlines()[1].startswith("a.mp4,") and "0 scored 0.5" in proc.stdout


def test_offline_download_fails_at_once_and_leaves_nothing(tmp_path, serve):
    import socket
    import threading
    import time

    from tools.download_weights import main

    out = tmp_path / "dl"
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused, as offline
    t0 = time.time()
    assert main(["--base-url", f"http://127.0.0.1:{port}", "--out-dir", str(out), "a", "b"]) == 1
    assert time.time() - t0 < 10
    assert not out.exists() or not any(out.rglob("*"))

    # a server that accepts and never answers: the timeout ends it, no .part left
    stall = socket.socket()
    stall.bind(("127.0.0.1", 0))
    stall.listen(1)
    threading.Thread(target=lambda: stall.accept(), daemon=True).start()
    t0 = time.time()
    assert main(["--base-url", f"http://127.0.0.1:{stall.getsockname()[1]}", "--out-dir", str(out),
                 "--timeout", "1", "a"]) == 1
    assert time.time() - t0 < 10 and not list(out.glob("*"))
    stall.close()

    base = serve(tmp_path)  # reachable, but the file is not there
    assert main(["--base-url", base, "--out-dir", str(out), "missing_file"]) == 1
    assert not list(out.glob("*"))


def test_offline_download_script_message(tmp_path):
    proc = _script(["weights/download_selim.sh"], {"SELIM_BASE_URL": "http://127.0.0.1:9", "WEIGHTS_DIR":
                                                   str(tmp_path / "w"), "TIMEOUT": "3"}, timeout=120)
    assert proc.returncode != 0 and "cannot download http://127.0.0.1:9/final_111_" in proc.stderr
    assert not (tmp_path / "w" / "selim_ensemble.txt").exists()
    assert not [p for p in (tmp_path / "w").rglob("*") if p.is_file()]


def test_ntech_layout_imports_by_position_and_gives_their_logits(tmp_path):
    """NTech-Lab's snapshots: fp16 state dicts of lukemelas' EfficientNet (num_classes=1),
    loaded as their predict.py does (.float()); imported, the same logits at their 224x192."""
    from efficientnet_pytorch import EfficientNet

    from training.imports import import_checkpoint

    torch.manual_seed(0)
    theirs = EfficientNet.from_name("efficientnet-b0", num_classes=1).eval()
    for m in theirs.modules():  # BN statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = {k: v.half() for k, v in theirs.state_dict().items()}
    path = tmp_path / "snapshot_100000.fp16.pth"
    torch.save(state, path)
    theirs.load_state_dict({k: v.float() for k, v in state.items()})

    imp = import_checkpoint(path, encoder="tf_efficientnet_b0.ns_jft_in1k")
    assert imp.imported["format"] == "ntech" and imp.cfg["size"] == [224, 192]
    assert imp.cfg["margin"] == 0.25 and imp.cfg["data"]["resize"] == "shortest"
    x = torch.randn(2, 3, 224, 192)
    with torch.no_grad():
        assert torch.allclose(imp.model(x), theirs(x), atol=1e-4)
    other = EfficientNet.from_name("efficientnet-b1", num_classes=1).state_dict()
    torch.save(other, tmp_path / "b1.pth")  # another network: refused, not half-loaded
    with pytest.raises(ValueError, match="not the same network|do not fit"):
        import_checkpoint(tmp_path / "b1.pth", encoder="tf_efficientnet_b0.ns_jft_in1k")
