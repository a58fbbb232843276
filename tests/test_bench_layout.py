"""The script folders cannot shadow the packages their scripts import."""
import importlib.machinery
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT_DIRS = [REPO, REPO / "bench", REPO / "tools"]


def test_no_script_shadows_an_installed_module():
    """`python bench/X.py` puts bench/ first on sys.path, so a file there named like a
    package replaces it in every import of that run: bench/av.py once made PyAV's
    `import av` load the dissonance benchmark, and every video 6_predict opened inside
    bench/quality.py failed ("module 'av' has no attribute 'error'")."""
    own = {d.resolve() for d in SCRIPT_DIRS}
    elsewhere = [p for p in sys.path if Path(p or ".").resolve() not in own]
    clashes = []
    for folder in SCRIPT_DIRS:
        for script in folder.glob("*.py"):
            name = script.stem
            if name == "__init__":
                continue
            if (name in sys.stdlib_module_names or name in sys.builtin_module_names
                    or importlib.machinery.PathFinder.find_spec(name, elsewhere) is not None):
                clashes.append(str(script.relative_to(REPO)))
    assert not clashes, f"these scripts shadow installed or standard modules: {clashes}"
