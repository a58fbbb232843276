"""The Dockerfile cannot be built here; check it agrees with requirements.txt."""
import re

from conftest import REPO


def _pins():
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: {line!r} is not an exact pin"
            pins[name.lower()] = version
    return pins


def test_every_requirement_is_pinned_exactly():
    pins = _pins()
    assert pins["torch"] and pins["torchvision"] and pins["facenet-pytorch"] == "2.5.3"
    assert "apex" not in pins  # the PyPI 'apex' is an unrelated web toolkit


def test_dockerfile_installs_requirements_and_nothing_unpinned():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.M)
    base = re.search(r"ARG BASE_IMAGE=(\S+)", text).group(1)
    assert base.startswith("pytorch/pytorch:") and "cuda" in base and base.endswith("-runtime")
    assert "COPY requirements.txt" in text and "ensure_venv.sh" in text
    pins = _pins()
    # any package the Dockerfile installs by name must carry requirements.txt's exact pin
    for name, version in re.findall(r"pip install[^\n]*?\b([A-Za-z0-9_.-]+)==([\w.+-]+)", text):
        assert pins.get(name.lower()) == version, f"Dockerfile pins {name}=={version}, requirements.txt {pins.get(name.lower())}"
    assert not re.search(r"pip install(?![^\n]*-r )[^\n]*\b(torch|timm|numpy)\b(?!==)", text)
    assert "run_all.sh" in text
