"""Audio-visual segments for the dissonance model (Chugh et al., MDS): `data.dataset:
av_segments`, read from step 1's `--av` artifacts (audio/{id}.wav, tracks/{id}.mp4 and .json).

An item is one segment of one video, `data.av_segment_s` seconds (1, the paper's; longer
windows are an option beyond it): `data.seq_len` face crops spread evenly over it (by
presentation time, so variable frame rates line up with the sound), resized to the
config's size and normalised, and the MFCCs of the same stretch (13 x 100 a second,
python_speech_features, cepstral mean and variance normalised over the video). Its label
is the video's. Videos without audio (no track was written) are left out.

Epochs are real/fake balanced by segments. With `data.av_fake_prob` (a documented option
beyond the paper) that share of the FAKE half is made from REAL segments by giving them
the wrong sound: the same video's audio shifted by at least `data.av_min_shift` seconds,
or (`data.av_swap_prob`, 0.5) another REAL video's audio; real videos are an unlimited
supply of such negatives. A swapped voice can be told by who speaks, a shifted one only by
timing: `av_swap_prob` 0 leaves timing as the only cue.
With `data.av_jitter` J (seconds, also beyond the paper) a training segment starts anywhere
within J s of its place (inside the video and its sound), its frames picked again by time,
so that a few minutes of speech give more than their count of windows.
With `data.av_augment` (beyond the paper) a training segment's crops get one draw of
`transforms.create_av_train_transforms` (a flip, shift and zoom, brightness and contrast,
downscale and JPEG, each with its own probability), the same for all its frames; validation
and prediction see them as they are. The draw comes last from the item's generator; with
`data.av_jitter` 0 a REAL item then makes one (it made none), so the process's stream, and
with it which wrong sounds later items get, differs from a run without the option.
With `encoder` "lip_landmarks" (LipStream, beyond the paper) the dataset fits dlib's 68
points on every track frame once, at start-up (`training.lips`, about 1.6 ms a frame), and
items carry each frame's lip features (T, NUM_LIP_FEATURES) in place of the crops.
With `data.frame_features` (a frozen per-frame visual stream only: FrameStream) the dataset
runs that encoder once over every frame of its videos, at start-up, and items carry the
frames' features (T, C) in place of the crops: training then costs the small trainable
part only. It keeps them in memory (2.5 KB a frame with Lite0): a CPU recipe's corpus.
Such a segment is a FAKE pair of two real streams: its `stream_label` (the per-stream
cross-entropies' target) is 0. Validation then also scores every REAL segment with a
wrong sound (seeded per item), as a FAKE video "{video}+wrong_audio" of its own; with
`model.mds` "video" (segments scored joined) or `model.offset_search` (one offset sought
for the whole video) that video's sound is one shift of its own for all its segments
(`video_wrong_audio`), as a fake with shifted sound would have.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from preprocessing.artifacts import WorkDir

from .zoo.mds import LIP_ENCODER

SEGMENT_S = 1.0     # the paper's segment length (data.av_segment_s's default)
MFCC_STEP = 0.01    # 10 ms: 100 MFCC frames per second
REAL_INDEX, FORCE_AV_FAKE = 0, 1  # index modes: index = item + mode * len(items)


@lru_cache(maxsize=64)
def _video_mfcc(wav: str) -> tuple[np.ndarray, float]:
    """(MFCCs (n, 13) with cepstral mean and variance normalisation over the video, duration s)."""
    from preprocessing.audio import mfcc, read_wav

    signal, rate = read_wav(wav)
    feats = mfcc(signal, rate, winstep=MFCC_STEP).astype(np.float32)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-5)
    return feats, len(signal) / float(rate)


@lru_cache(maxsize=16)
def _track(path: str) -> tuple[np.ndarray, np.ndarray]:
    from preprocessing.av import load_track

    return load_track(path)


def mfcc_window(feats: np.ndarray, start: float, length: float = SEGMENT_S) -> np.ndarray:
    """(13, length / 10 ms) MFCC frames from `start` s (edge-padded past the end)."""
    from preprocessing.audio import mfcc_window as window

    return window(feats, start, length=length, winstep=MFCC_STEP)


def offset_windows(feats: np.ndarray, starts: list[float], offsets: tuple[float, ...],
                   length: float = SEGMENT_S) -> np.ndarray:
    """(O, K, 1, 13, length / 10 ms): the MFCC window of each of K segments (`starts`, s)
    moved by each of O `offsets` (s; `model.offset_search`). Rows before the sound's start
    repeat its first row, rows past its end its last (mfcc_window's rule at the end)."""
    feats = np.asarray(feats)
    n = int(round(length / MFCC_STEP))
    first = np.rint((np.asarray(offsets, np.float64)[:, None] + np.asarray(starts, np.float64)[None, :])
                    / MFCC_STEP).astype(np.int64)  # (O, K)
    rows = np.clip(first[..., None] + np.arange(n), 0, len(feats) - 1)  # (O, K, n)
    return np.ascontiguousarray(feats[rows].transpose(0, 1, 3, 2)[:, :, None], dtype=np.float32)


def scores_whole_videos(cfg: dict) -> bool:
    """Whether a dissonance config scores a video from all its segments together: one
    distance over them joined (`model.mds` "video") or one offset sought for the whole
    video's sound (`model.offset_search`). Validation then keeps each segment's stream
    features and sound (engine.evaluate) and gives a "+wrong_audio" clone one shift."""
    model = cfg.get("model") or {}
    return model.get("mds") == "video" or bool(model.get("offset_search"))


class AVSegmentDataset(Dataset):
    balanced_epochs = True

    def __init__(self, work_dir: str | Path, df: pd.DataFrame, fold: int, train: bool, cfg: dict, seed: int = 0):
        from preprocessing.audio import segments, video_end
        from preprocessing.av import read_track_info

        from .config import input_hw

        self.work, self.cfg, self.train, self.seed = WorkDir(work_dir), cfg, bool(train), int(seed)
        self.height, self.width = input_hw(cfg)
        self.mean = np.asarray(cfg["normalize"]["mean"], np.float32)
        self.std = np.asarray(cfg["normalize"]["std"], np.float32)
        d = cfg["data"]
        self.frames_per_segment = int(d["seq_len"])
        self.segment_s = float(d["av_segment_s"])
        self.av_fake_prob = float(d["av_fake_prob"]) if self.train else 0.0
        self.min_shift = float(d["av_min_shift"])
        self.swap_prob = float(d["av_swap_prob"])
        # validation scores a video's segments together, so its wrong sound is one shift of the
        # whole video's sound (video_wrong_audio), as a shifted fake's would be
        self.video_level = scores_whole_videos(cfg)
        self.jitter = float(d["av_jitter"]) if self.train else 0.0
        self.augment = None  # data.av_augment's pipeline, training only (reseeded per item)
        if d["av_augment"] and self.train:
            from .transforms import create_av_train_transforms

            self.augment = create_av_train_transforms()
        self._rng, self._rng_key = None, None  # _item_rng's per-process stream
        videos = df.drop_duplicates("video")
        videos = videos[videos.fold != int(fold)] if self.train else videos[videos.fold == int(fold)]
        self.videos: list[dict] = []
        items = []
        self.skipped: list[str] = []
        for row in videos.itertuples():
            wav = self.work.root / "audio" / f"{row.video}.wav"
            track = self.work.root / "tracks" / f"{row.video}.json"
            if not (wav.is_file() and track.is_file()):
                self.skipped.append(row.video)  # no audio (step 1 --av noted it) or not extracted
                continue
            info = read_track_info(track)
            times, margin = np.asarray(info["times"], dtype=np.float64), float(info["margin"])
            if abs(margin - float(cfg["margin"])) > 1e-4:
                raise ValueError(f"{track}: the face track was cut with margin {margin:g}, the config says "
                                 f"{cfg['margin']}: set 'margin' to the step's --av-margin (or re-run it)")
            _, duration = _video_mfcc(str(wav))
            segs = segments(times.astype(np.float64), duration, length=self.segment_s,
                            frames_per_segment=self.frames_per_segment)
            if not segs:
                self.skipped.append(row.video)  # shorter than one segment
                continue
            k = len(self.videos)
            self.videos.append({"video": row.video, "label": int(row.label), "wav": str(wav), "track": str(track),
                                "duration": duration, "times": times,
                                "last_start": max(0.0, min(video_end(times), duration) - self.segment_s)})
            items += [(k, s.start, tuple(s.frames)) for s in segs]
        self.items = items
        self.labels = np.array([self.videos[k]["label"] for k, _, _ in items], dtype=np.int64)
        self._real_videos = [k for k, v in enumerate(self.videos) if v["label"] == 0]
        self.features = (self._lip_features() if cfg["encoder"] == LIP_ENCODER
                         else self._frame_features() if d["frame_features"] else None)
        # validation with av_fake_prob: every REAL segment once more with a wrong sound (seeded
        # per item), scored as a FAKE video of its own, "{video}+wrong_audio"
        self.order = list(range(len(items)))
        if not self.train and float(d["av_fake_prob"]) > 0 and len(self._real_videos) > 1:
            reals = np.flatnonzero(self.labels == 0).tolist()
            if self.video_level:  # the segments the advanced sound still covers; a video too
                # short for any keeps them all, each with its own wrong sound (wrong_audio)
                covered = [i for i in reals if self.video_wrong_audio(*items[i][:2]) is not None]
                shifted = {items[i][0] for i in covered}
                reals = covered + [i for i in reals if items[i][0] not in shifted]
            self.order += [i + FORCE_AV_FAKE * len(items) for i in sorted(reals)]

    def __len__(self) -> int:
        return len(self.order)

    # -- epochs
    def default_epoch_size(self) -> int:
        return 2 * max(int((self.labels == 0).sum()), int((self.labels == 1).sum()), 1)

    def epoch_indices(self, epoch: int, num_samples: int | None = None, seed: int | None = None) -> list[int]:
        """Half REAL, half FAKE segments (av_fake_prob of the FAKE half: REAL segments with
        the wrong audio, all of it when there are no FAKE videos), shuffled; a pure function
        of (seed, epoch)."""
        from .datasets import _draw

        num_samples = self.default_epoch_size() if num_samples is None else int(num_samples)
        rng = np.random.default_rng([self.seed if seed is None else int(seed), int(epoch), 11])
        real, fake = np.flatnonzero(self.labels == 0), np.flatnonzero(self.labels == 1)
        if len(real) == 0:
            raise ValueError("no REAL segment with audio in this split: cannot balance real and fake")
        n_fake = num_samples // 2
        share = 1.0 if len(fake) == 0 else self.av_fake_prob
        if share == 0 and len(fake) == 0:
            raise ValueError("no FAKE segment with audio in this split (data.av_fake_prob makes some from reals)")
        n_av = int((rng.random(n_fake) < share).sum())
        n = len(self.items)
        picks = [_draw(rng, real, num_samples - n_fake), _draw(rng, real, n_av) + FORCE_AV_FAKE * n,
                 _draw(rng, fake, n_fake - n_av) if n_fake > n_av else np.zeros(0, np.int64)]
        return rng.permutation(np.concatenate(picks)).tolist()

    # -- items
    def _item_rng(self, index: int) -> np.random.Generator:
        """A fresh Generator for one training item from this process's advancing stream (the
        frame datasets' process_stream): a new draw every epoch, also with persistent workers."""
        from .datasets import process_stream

        return np.random.default_rng([int(process_stream(self).integers(2**63)), int(index)])

    def wrong_audio(self, k: int, start: float, rng: np.random.Generator) -> tuple[str, float, str]:
        """(wav, start, kind) of a wrong sound for video k's segment at `start`: another REAL
        video's with probability `data.av_swap_prob` (0.5), else its own audio shifted by
        >= min_shift s; always another's when the video is too short to shift."""
        v = self.videos[k]
        room = [t for t in np.arange(0.0, v["duration"] - self.segment_s + 1e-6, 0.1)
                if abs(t - start) >= self.min_shift]
        others = [j for j in self._real_videos if j != k]
        if room and (not others or rng.random() < 1.0 - self.swap_prob):
            return v["wav"], float(rng.choice(room)), "shift"
        if not others:
            raise ValueError(f"{v['video']}: too short to shift its audio by {self.min_shift} s and no other "
                             f"REAL video to take audio from")
        j = int(rng.choice(others))
        latest = max(0.0, self.videos[j]["duration"] - self.segment_s)
        return self.videos[j]["wav"], float(rng.uniform(0, latest)), "swap"

    def video_wrong_audio(self, k: int, start: float) -> tuple[str, float, str] | None:
        """(wav, start, "shift") of the wrong sound of video k's segment at `start` when one
        shift holds for the whole video (validation with model.mds "video" or
        model.offset_search): its own sound
        advanced by a delay in [min_shift, min_shift + 0.5) s drawn once per video (seeded);
        None past the end of the advanced sound, which is that much shorter (the clone then
        leaves the segment out, as the sound of a shifted fake ends early)."""
        v = self.videos[k]
        delay = float(np.random.default_rng([self.seed, 19, k]).uniform(self.min_shift, self.min_shift + 0.5))
        if start + delay > v["duration"] - self.segment_s + 1e-6:
            return None
        return v["wav"], float(start + delay), "shift"

    def _lip_features(self) -> list[np.ndarray]:
        """Every track frame's lip features (n, NUM_LIP_FEATURES) per video (`training.lips`),
        computed once (about 1.6 ms a frame); warns of videos where dlib fits under half of them."""
        import warnings

        from preprocessing.progress import progress_bar

        from .lips import crops_lip_features, required_predictor

        predictor, out = required_predictor(), []
        for v in progress_bar(iterable=self.videos, desc="lip landmarks", unit="video", leave=False,
                              disable=len(self.videos) < 20):
            frames, _ = _track(v["track"])
            feats, found = crops_lip_features(frames, float(self.cfg["margin"]), predictor)
            if found < len(frames) / 2:
                warnings.warn(f"{v['video']}: dlib's lip points fit {found} of its {len(frames)} track frames; "
                              f"the others repeat the nearest earlier fit", stacklevel=2)
            out.append(feats)
        return out

    def _frame_features(self) -> list[np.ndarray]:
        """Every frame's features (n, C) per video, float16, from the config's frozen encoder."""
        from .engine import resolve_pretrained
        from .zoo.mds import MOTION_ENCODER, FrameStream

        m = self.cfg["model"]
        if self.cfg["encoder"] in ("r3d_18", MOTION_ENCODER):
            raise ValueError("data.frame_features needs a frozen per-frame visual stream (a 2D encoder such as "
                             f"tf_efficientnet_lite0), not {self.cfg['encoder']}, which trains")
        weights = resolve_pretrained(self.cfg["pretrained"])
        if weights is False:
            raise ValueError("data.frame_features needs the frozen encoder's weights ('pretrained'): a random "
                             "initialisation here would not be the model's")
        stream = FrameStream(self.cfg["encoder"], weights, m.get("region"),
                             m.get("time_steps") or 1, m.get("frame_size", 64)).eval()
        out = []
        for k, v in enumerate(self.videos):
            n = len(_track(v["track"])[0])
            out.append(torch.cat([stream.frame_features(self.faces(k, tuple(range(i, min(n, i + 64)))))
                                  for i in range(0, n, 64)]).numpy().astype(np.float16))
        return out

    def faces(self, k: int, frames: tuple[int, ...], rng: np.random.Generator | None = None) -> torch.Tensor:
        """The crops of video k's `frames`, normalised (T, 3, H, W); with `rng` (a dataset
        with data.av_augment), augmented by one draw from it for all of them."""
        track, _ = _track(self.videos[k]["track"])
        out = []
        for i in frames:
            im = track[min(i, len(track) - 1)]
            if im.shape[:2] != (self.height, self.width):
                im = cv2.resize(im, (self.width, self.height),
                                interpolation=cv2.INTER_AREA if im.shape[0] > self.height else cv2.INTER_LINEAR)
            out.append(im)
        out = np.stack(out)
        if rng is not None:
            from .transforms import reseed

            reseed(self.augment, rng)
            out = self.augment(images=out)["images"]
        x = (out.astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()  # (T, 3, H, W)

    def __getitem__(self, index: int) -> dict:
        if self.train:
            return self.get_item(int(index))  # the epoch's indices carry their mode
        index = self.order[int(index)]
        return self.get_item(index, np.random.default_rng([self.seed, 17, index]))

    def get_item(self, index: int, rng: np.random.Generator | None = None) -> dict:
        mode, item = divmod(int(index), len(self.items))
        k, start, frames = self.items[item]
        v = self.videos[k]
        if self.jitter > 0:
            rng = rng or self._item_rng(index)
            lo = max(0.0, start - self.jitter)  # uniform over what the video allows, no pile-up at its ends
            hi = max(lo, min(max(v["last_start"], start), start + self.jitter))
            start = float(rng.uniform(lo, hi))
            frames = frames_at(v["times"], start, len(frames), self.segment_s)
        label, wav, audio_start, kind, name = v["label"], v["wav"], start, "own", v["video"]
        stream_label = label
        if mode == FORCE_AV_FAKE:
            rng = rng or self._item_rng(index)
            whole = self.video_wrong_audio(k, start) if self.video_level and not self.train else None
            wav, audio_start, kind = whole or self.wrong_audio(k, start, rng)
            label, stream_label = 1, 0  # a fake pair of a real face and a real voice
            if not self.train:
                name = f"{name}+wrong_audio"
        feats, _ = _video_mfcc(wav)
        # (1, 13, 100 per second of segment)
        audio = torch.from_numpy(mfcc_window(feats, audio_start, self.segment_s)).unsqueeze(0).float()
        if self.augment is not None:  # drawn last: without it, every other draw is as before
            rng = rng or self._item_rng(index)
        image = (self.faces(k, frames, rng if self.augment is not None else None) if self.features is None
                 else torch.from_numpy(self.features[k][np.minimum(frames, len(self.features[k]) - 1)]
                                       .astype(np.float32)))  # as faces(): a track cut short repeats its last frame
        return {"image": image, "audio": audio, "label": torch.tensor(float(label)),
                "stream_label": torch.tensor(float(stream_label)), "video": name,
                "file": f"{name}@{start:.2f}s", "segment": float(start), "audio_kind": kind,
                "audio_start": float(audio_start), "audio_wav": wav}


def frames_at(times: np.ndarray, start: float, n: int, length: float = SEGMENT_S) -> tuple[int, ...]:
    """Indices of the frames nearest in time to start + j * length / n, j < n (ties: the earlier),
    over the whole video: segments()' rule without its window."""
    from preprocessing.audio import _nearest

    times = np.asarray(times, dtype=np.float64)
    return tuple(_nearest(times, 0, len(times), float(t)) for t in start + np.arange(n) * (length / n))


def video_mds(videos: list[str], distances: list[float]) -> tuple[list[str], np.ndarray]:
    """(videos in first-seen order, their MDS: the mean segment distance)."""
    per: dict[str, list[float]] = {}
    for v, d in zip(videos, distances):
        per.setdefault(v, []).append(float(d))
    return list(per), np.array([np.mean(x) for x in per.values()])


def fit_calibration(mds: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(a, b) of P(FAKE) = sigmoid(a (MDS - b)), a logistic fit on validation videos (a >= 0:
    more dissonance never means more real); the midpoint of the class means when one class
    is missing or the fit degenerates."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels).astype(int)
    if len(set(labels.tolist())) < 2:
        return 10.0, float(np.mean(mds)) if len(mds) else 0.5
    lr = LogisticRegression(C=100.0).fit(np.asarray(mds).reshape(-1, 1), labels)
    a = float(lr.coef_[0, 0])
    if not math.isfinite(a) or a <= 1e-6:
        return 10.0, float((mds[labels == 0].mean() + mds[labels == 1].mean()) / 2)
    return a, float(-lr.intercept_[0] / a)
