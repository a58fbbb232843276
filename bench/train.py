#!/usr/bin/env python
"""Training throughput of a config: forward + backward + optimizer step, as 5_train.py
does them (same model, optimizer, AMP), on synthetic batches of the config's shape.

    python bench/train.py --config configs/lite0_cpu.json [--steps 10] [--batch-size B] [--device cuda]

Prints one JSON object: imgs/s (frames/s for sequence models) and peak memory.
"""
import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from training.config import SEQUENCE_DATASETS, load_config  # noqa: E402
from training.engine import (Dist, amp_dtype, autocast_context, build_model, build_optimizer,  # noqa: E402
                             distill_loss)
from training.losses import WeightedLoss  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    p.add_argument("--device", default=None)
    p.add_argument("--pretrained", default="none", help="'none' (random init, no download) or as in the config")
    p.add_argument("--channels-last", choices=["config", "on", "off"], default="config",
                   help="NHWC conv weights (config key channels_last, default on) or force it on/off")
    a = p.parse_args()

    cfg = load_config(a.config)
    if a.channels_last != "config":
        cfg["channels_last"] = a.channels_last == "on"
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    d = Dist(device=device)
    model = build_model(cfg, pretrained=False if a.pretrained == "none" else None).to(device).train()
    teacher = None
    if cfg["network"] == "DeepFakeClassifierDistill":
        # the teacher's cost counts: a frame model of the same encoder stands in for the checkpoint
        tcfg = dict(cfg, network="DeepFakeClassifier", model={})
        from training.distill import Teacher

        teacher = Teacher(build_model(tcfg, pretrained=False).to(device).eval(), cfg["size"],
                          cfg["normalize"]["mean"], cfg["normalize"]["std"])
    opt = build_optimizer(cfg, model)
    dtype = amp_dtype(cfg, d)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    criterion = WeightedLoss(cfg["losses"], cfg["label_smoothing"])
    bs = a.batch_size or cfg["optimizer"]["batch_size"]
    from training.config import input_hw

    s = cfg["size"]
    h, w = input_hw(cfg)
    shape = (bs, cfg["data"]["seq_len"], 3, h, w) if cfg["data"]["dataset"] in SEQUENCE_DATASETS else (bs, 3, h, w)
    x = torch.randn(shape, device=device)
    y = torch.randint(0, 2, (bs, 1), device=device).float()
    frames = bs * (shape[1] if len(shape) == 5 else 1)

    def step():
        with autocast_context(cfg, d):
            out = model(x)
            loss = distill_loss(out, y, teacher, x, criterion, cfg) if teacher is not None else criterion(out, y.expand_as(out))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for _ in range(a.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.time() - t0
    out = {"config": str(a.config), "network": cfg["network"], "encoder": cfg["encoder"], "size": s,
           "batch_size": bs, "device": str(device), "amp": str(dtype) if dtype else None,
           "channels_last": cfg["channels_last"], "steps": a.steps,
           "imgs_per_s": round(frames * a.steps / wall, 2), "s_per_step": round(wall / a.steps, 4),
           "threads": torch.get_num_threads()}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
        out["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
