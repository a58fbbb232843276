"""bench/dissonance.py's training set: which clips --sync-fakes and --dfdc-speech add."""
import importlib.util
import json
import sys

from conftest import REPO, write_metadata


def _dissonance():
    spec = importlib.util.spec_from_file_location("dissonance", REPO / "bench" / "dissonance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sys.modules.setdefault("dissonance", module)


def test_sync_fakes_are_audio_driven_heads_outside_the_lipsync_test(tmp_path):
    from preprocessing.dataset import load_dataset

    d = _dissonance()
    folders = {
        "sadtalker": {"r.mp4": {"label": "REAL"},
                      "s.mp4": {"label": "FAKE", "method": "SadTalker (one image + audio, still mode)"}},
        "aniportrait": {"a.mp4": {"label": "FAKE", "method": "AniPortrait (audio-driven, one image)"},
                        "v.mp4": {"label": "FAKE", "method": "AniPortrait (video-driven reenactment, one image)"}},
        "talkingavatar": {"w.mp4": {"label": "FAKE", "method": "Wav2Lip on AI-generated avatar"},
                          "p.mp4": {"label": "FAKE", "method": "animated AI-generated portrait (D-ID style)"}},
        # the lip-sync test's folders stay out whatever their method: their fakes are test 2
        "sadtalker_video_lipsync": {"x.mp4": {"label": "FAKE", "method": "SadTalker (one image + audio)"}},
        "hyperlips": {"h.mp4": {"label": "FAKE", "method": "HyperLips"}},
        "celebdf": {"c.mp4": {"label": "FAKE"}},  # no method at all
    }
    for folder, entries in folders.items():
        write_metadata(tmp_path / folder, {n: {"original": None, **e} for n, e in entries.items()})
        for n in entries:
            (tmp_path / folder / n).write_bytes(b"\0")
    picked = d.sync_fakes(load_dataset(tmp_path))
    assert sorted(v.id for v in picked) == ["aniportrait/a", "sadtalker/s", "talkingavatar/w"]
    assert all(v.is_fake for v in picked)


def test_dfdc_speech_takes_every_dfdc_clip_real_or_fake(tmp_path):
    d = _dissonance()
    dev = tmp_path / "dev"
    write_metadata(dev / d.DFDC_FOLDER, {"r.mp4": {"label": "REAL", "original": None},
                                         "f.mp4": {"label": "FAKE", "original": "gone.mp4"}})
    write_metadata(dev / "real_talking_heads", {"g.mp4": {"label": "REAL", "original": None}})
    for p in (dev / d.DFDC_FOLDER / "r.mp4", dev / d.DFDC_FOLDER / "f.mp4", dev / "real_talking_heads" / "g.mp4"):
        p.write_bytes(b"\0")
    picked = d.dfdc_speech(dev)
    assert sorted(name for _, name in picked) == ["f.mp4", "r.mp4"]
    assert all(path.parent.name == d.DFDC_FOLDER and path.exists() for path, _ in picked)
    # linked as REAL, whatever their label was: speech in sync for the sync detector
    assert d.link_reals(tmp_path / "out", picked) == 2
    meta = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert {m["label"] for m in meta.values()} == {"REAL"}
