"""Small video factories for the tests (real encodes with the project's ffmpeg)."""
import subprocess
from pathlib import Path

import numpy as np

from preprocessing.sample_data import CameraPath, load_portrait, render_clip
from preprocessing.video import encode_video, ffmpeg_exe


def portrait_clip(path, identity="astronaut", size=(256, 192), frames=12, fps=15, seed=0, grayscale=False):
    """A REAL-style clip of a portrait (one face) encoded as H.264 mp4."""
    clip = render_clip(load_portrait(identity), CameraPath.random(np.random.default_rng(seed)), size, frames,
                       grayscale=grayscale)
    encode_video(path, clip, fps)
    return clip


def no_face_clip(path, size=(256, 192), frames=12, fps=15):
    """A clip of a coffee cup panning: no face anywhere."""
    import cv2
    import skimage.data

    img = skimage.data.coffee()
    clip = []
    for i in range(frames):
        m = np.float32([[1, 0, -i * 2], [0, 1, -i]])
        clip.append(cv2.warpAffine(cv2.resize(img, (size[0] + 40, size[1] + 40)), m, size))
    encode_video(path, np.stack(clip), fps)


def to_mpg(src, dst):
    """Re-encode to MPEG-1 in an .mpg container (as the GRID corpus clips)."""
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), "-c:v", "mpeg1video",
                    "-q:v", "3", "-f", "mpeg", str(dst)], check=True)


def truncate(src, dst, fraction=0.5):
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
