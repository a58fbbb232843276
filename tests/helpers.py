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


# The astronaut's face box (MTCNN, full resolution) in skimage.data.astronaut() (512x512).
ASTRONAUT_FACE = (181.0, 62.0, 268.0, 172.0)


def dark_full_body_frame(size=(1920, 1080), face_frac=0.05, darkness=0.3, seed=0, x=0.6, y=0.22, noise_seed=None):
    """A dim, noisy full-body-like shot: the astronaut, downscaled so that her face box is
    `face_frac` of the frame height, standing on a dark body in a dark room.

    `seed` draws the room, `noise_seed` (default: `seed`) the sensor noise. Returns
    (RGB uint8 frame, face box (x1, y1, x2, y2) in frame pixels).
    """
    import cv2
    import skimage.data

    w, h = size
    rng = np.random.default_rng(seed)
    f = face_frac * h / (ASTRONAUT_FACE[3] - ASTRONAUT_FACE[1])
    person = cv2.resize(skimage.data.astronaut(), None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    ph, pw = person.shape[:2]
    # A room: a dim gradient, a floor and a few pieces of furniture.
    img = np.empty((h, w, 3), np.float32)
    img[:] = np.array([60, 55, 70], np.float32) + np.linspace(0, 40, w, dtype=np.float32)[None, :, None]
    img[int(0.8 * h):] = (45, 40, 35)
    for _ in range(6):
        x1, y1 = int(rng.integers(0, w - 200)), int(rng.integers(0, h - 200))
        img[y1:y1 + int(rng.integers(60, 200)), x1:x1 + int(rng.integers(60, 200))] = rng.uniform(30, 110, 3)
    x0, y0 = int(x * w), int(y * h)
    x0, y0 = min(x0, w - pw), min(y0, h - ph)
    # The body: torso and legs below the head and shoulders, down to the floor.
    body = slice(x0 + pw // 6, x0 + pw - pw // 6)
    img[y0 + ph:min(h, y0 + ph + int(0.35 * h)), body] = (70, 80, 110)
    img[y0 + ph + int(0.35 * h):min(h, y0 + ph + int(0.55 * h)), body] = (35, 35, 45)
    img[y0:y0 + ph, x0:x0 + pw] = person
    noise = np.random.default_rng(seed if noise_seed is None else noise_seed).normal(0, 3.0, img.shape)
    img = img * darkness + noise
    box = (x0 + ASTRONAUT_FACE[0] * f, y0 + ASTRONAUT_FACE[1] * f,
           x0 + ASTRONAUT_FACE[2] * f, y0 + ASTRONAUT_FACE[3] * f)
    return np.clip(img, 0, 255).round().astype(np.uint8), box


def dark_full_body_clip(path, size=(1920, 1080), frames=12, fps=25, face_frac=0.05, darkness=0.3, seed=0):
    """`dark_full_body_frame` as an H.264 clip: the person walks slowly to the left, the
    sensor noise changes every frame. Returns the face box of each frame."""
    clip, boxes = [], []
    for i in range(frames):
        frame, box = dark_full_body_frame(size, face_frac, darkness, seed, x=0.6 - 0.002 * i,
                                          noise_seed=seed * 1000 + i)
        clip.append(frame)
        boxes.append(box)
    encode_video(path, np.stack(clip), fps)
    return boxes
