#!/usr/bin/env python
"""Step 1: face crops of every video -> WORK_DIR/crops/{id}/{frame}_{face}.png.
A FAKE is cropped with its ORIGINAL's boxes, so the two are pixel-aligned.
With --av, also each video's sound (WORK_DIR/audio/{id}.wav, 16 kHz mono) and face track
(WORK_DIR/tracks/{id}.mp4 + .json: a square crop of the main face on every frame, and the frame
times) for the audio-visual dissonance model (configs/mds*.json); a video without sound
gets a note in 1_extract_av_errors.jsonl."""
import argparse
import sys

from preprocessing.av import DEFAULT_AV_MARGIN, DEFAULT_AV_SIZE, extract_av
from preprocessing.crops import DEFAULT_MARGIN, extract_crops
from preprocessing.runner import add_common_args, cli_main


def crops_and_av(opts, av: bool = False, av_size: int = DEFAULT_AV_SIZE, av_margin: float = DEFAULT_AV_MARGIN,
                 **crop_args):
    result = extract_crops(opts, **crop_args)
    if av:
        print(result.summary())
        result = extract_av(opts, size=av_size, margin=av_margin)
    return result


if __name__ == "__main__":
    p = add_common_args(argparse.ArgumentParser(description=__doc__))
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                   help="added on every side, as a fraction of the box side (default 1/3, as selim)")
    p.add_argument("--clip-len", type=int, default=1,
                   help="also crop the next N-1 frames after each detected frame with its box, "
                        "for the sequence model (default 1: detected frames only)")
    p.add_argument("--av", action="store_true",
                   help="also extract the sound and the face track of every video (the dissonance model)")
    p.add_argument("--av-size", type=int, default=DEFAULT_AV_SIZE,
                   help="side of the face track's square crops (default %(default)s; 224 for configs/mds.json)")
    p.add_argument("--av-margin", type=float, default=DEFAULT_AV_MARGIN,
                   help="face track crop: a square of (1 + 2 margin) x the box's longer side (default %(default)s)")
    sys.exit(cli_main(crops_and_av, p))
