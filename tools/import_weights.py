#!/usr/bin/env python
"""Turn a published weight file into this project's self-describing checkpoint.

    python tools/import_weights.py final_111_DeepFakeClassifier_tf_efficientnet_b7_ns_0_36 weights/selim_111.pt
    python tools/import_weights.py FILE OUT.pt --encoder tf_efficientnet_b5.ns_jft_in1k [--source URL]

Reads selim's layout (encoder.* with timm's ImageNet classifier, fc.*, maybe `module.`-
prefixed; his other encoders too) or a plain state dict in this project's names, and
writes {config, state_dict, epoch, metrics, imported, fingerprint}: the config is
configs/b7.json with the file's encoder; `imported` records the source, its sha256 and
the preprocessing the weights expect. 6_predict.py also takes such files directly and
imports them on the fly.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--encoder", default=None, help="timm encoder name (default: from selim's file name)")
    p.add_argument("--source", default=None, help="where the file came from (URL), recorded")
    p.add_argument("--config", type=Path, default=None, help="base config (default configs/b7.json)")
    a = p.parse_args(argv)

    from training.engine import save_checkpoint
    from training.imports import import_checkpoint

    t0 = time.time()
    try:
        imp = import_checkpoint(a.file, encoder=a.encoder, source=a.source, base_config=a.config)
    except (FileNotFoundError, ValueError) as e:
        print(f"[import_weights] error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 -- an unreadable file: say which and why
        print(f"[import_weights] error: {a.file} could not be read as weights ({type(e).__name__}: {e})",
              file=sys.stderr)
        return 1
    t1 = time.time()
    save_checkpoint(a.output, imp.model, imp.cfg, imp.epoch, imp.metrics, {"imported": imp.imported})
    print(f"[import_weights] {a.file.name} ({imp.imported['format']} layout, {imp.imported['encoder']}, "
          f"sha256 {imp.imported['sha256'][:12]}) -> {a.output}: import {t1 - t0:.1f}s, fingerprint and save "
          f"{time.time() - t1:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
