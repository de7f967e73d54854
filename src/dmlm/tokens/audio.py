"""Audio units over frame features + k-means (HuBERT's first iteration).

Encoders: ``mfcc_kmeans``: per 10 ms frame 13 MFCCs (25 ms Hann window, 40 mel bands,
torchaudio's dB scale) plus deltas and delta-deltas = 39 values; ``logmel_kmeans``: the 40
log mel energies of the same frames. Either is normalised to zero mean / unit variance over
each utterance.
With ``frame_stack`` k, k consecutive frames are concatenated (39k values) so units come at
100/k Hz. Frame count (before stacking): ``1 + n_samples // 160`` (centred frames); stacking pads
the last group with copies of the last frame, giving ``ceil(frames / k)`` units. With
``collapse_repeats`` consecutive identical units are merged.
"""

from __future__ import annotations

import os

import numpy as np

from dmlm.errors import DmlmError
from dmlm.tokens.codebook import (
    Codebook,
    stack_frames,
    kept_units,
    load_ragged,
    positive_int,
    progress,
    require,
    sample_indices,
)

ENCODER = "mfcc_kmeans"
FEATURES = {"mfcc_kmeans": "mfcc", "logmel_kmeans": "logmel"}
N_MFCC = 13
N_MELS = 40
WINDOW_S = 0.025
HOP_S = 0.010
DEFAULT_SAMPLE_RATE = 16000


class MfccFeatures:
    """Callable: float32 waveform (n,) -> normalised, stacked feature rows (frames, d * k), with
    d = 39 (``kind="mfcc"``) or 40 (``kind="logmel"``)."""

    def __init__(self, sample_rate: int = DEFAULT_SAMPLE_RATE, frame_stack: int = 1, kind: str = "mfcc"):
        import torchaudio

        self.sample_rate = int(sample_rate)
        self.frame_stack = int(frame_stack)
        self.kind = kind
        self.win = int(round(WINDOW_S * self.sample_rate))
        self.hop = int(round(HOP_S * self.sample_rate))
        melkwargs = {"n_fft": self.win, "win_length": self.win, "hop_length": self.hop, "n_mels": N_MELS}
        if kind == "mfcc":
            self.transform = torchaudio.transforms.MFCC(sample_rate=self.sample_rate, n_mfcc=N_MFCC, melkwargs=melkwargs)
        elif kind == "logmel":
            self.transform = torchaudio.transforms.MelSpectrogram(sample_rate=self.sample_rate, **melkwargs)
        else:
            raise DmlmError(f"tokens.audio: unknown frame features {kind!r} (mfcc, logmel)")

    @property
    def dim(self) -> int:
        return (3 * N_MFCC if self.kind == "mfcc" else N_MELS) * self.frame_stack

    def n_frames(self, n_samples: int) -> int:
        """Number of feature rows for a waveform of ``n_samples`` samples."""
        frames = 1 + n_samples // self.hop
        return -(-frames // self.frame_stack)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        import torch
        import torchaudio.functional as AF

        x = torch.from_numpy(np.asarray(wave, dtype=np.float32).copy())
        if len(x) <= self.win // 2:  # reflect padding needs more than half a window
            x = torch.nn.functional.pad(x, (0, self.win // 2 + 1 - len(x)))
        with torch.no_grad():
            if self.kind == "mfcc":
                c = self.transform(x)  # (13, T)
                f = torch.cat([c, AF.compute_deltas(c), AF.compute_deltas(AF.compute_deltas(c))], 0).T
            else:
                f = torch.log(self.transform(x) + 1e-6).T  # (T, 40)
            f = (f - f.mean(0)) / (f.std(0, unbiased=False) + 1e-5)
        return stack_frames(f.numpy().astype(np.float32, copy=False), self.frame_stack)


def load_waves(media_path: str | os.PathLike):
    waves = load_ragged(media_path, "audio")
    if waves.data.ndim != 1 or waves.data.dtype != np.float32:
        raise DmlmError(
            f"{waves.source}: expected a 1-D float32 waveform array, got {waves.data.dtype} {waves.data.shape}"
        )
    empty = np.flatnonzero(waves.lengths() == 0)
    if len(empty):
        raise DmlmError(f"{waves.source}: utterance {int(empty[0])} is empty ({len(empty)} empty in all)")
    return waves


def _extractor(settings: dict) -> MfccFeatures:
    return MfccFeatures(
        sample_rate=int(settings.get("sample_rate", DEFAULT_SAMPLE_RATE)),
        frame_stack=int(settings.get("frame_stack", 1)),
        kind=FEATURES.get(settings.get("encoder", ENCODER), "mfcc"),
    )


def fit(settings: dict, media_path: str | os.PathLike) -> Codebook:
    """Fit the audio codebook on up to ``fit_utterances`` utterances of ``media_path`` (clean train audio)."""
    positive_int(settings, "n_units", "audio")
    if "frame_stack" in settings:
        positive_int(settings, "frame_stack", "audio")
    n_fit = positive_int(settings, "fit_utterances", "audio")
    seed = int(require(settings, "seed", "audio"))
    waves = load_waves(media_path)
    extract = _extractor(settings)
    chosen = sample_indices(len(waves), n_fit, seed)
    rows = [extract(waves[int(i)]) for i in progress(chosen, "audio features (fit)")]
    settings = {**settings, "sample_rate": extract.sample_rate, "frame_stack": extract.frame_stack}
    return Codebook.fit(np.concatenate(rows), settings, "audio")


def encode(codebook: Codebook, media_path: str | os.PathLike, return_frames: bool = False):
    """int32 unit ids per utterance of the ragged waveform array at ``media_path``; with
    ``return_frames`` also each kept unit's frame index (``codebook.kept_units``)."""
    waves = load_waves(media_path)
    extract = _extractor(codebook.settings)
    if extract.dim != codebook.dim:
        raise DmlmError(f"audio codebook has {codebook.dim}-dim centroids, features have {extract.dim}")
    collapse = bool(codebook.settings.get("collapse_repeats", False))
    out, frames = [], []
    for i in progress(range(len(waves)), "audio tokens"):
        ids = codebook.encode(extract(waves[i]))
        frames.append(kept_units(ids, collapse))
        out.append(ids[frames[-1]])
    return (out, frames) if return_frames else out


def describe(codebook: Codebook) -> dict:
    """Vocabulary size and units per second (100 Hz frames / frame_stack, before collapsing)."""
    rate = int(codebook.settings.get("sample_rate", DEFAULT_SAMPLE_RATE))
    hop = int(round(HOP_S * rate))
    return {"vocab_size": codebook.n_units, "frame_rate": rate / hop / int(codebook.settings.get("frame_stack", 1))}


def check_settings(settings: dict) -> None:
    """Validate the settings an mfcc_kmeans codebook needs (no data is read)."""
    positive_int(settings, "n_units", "audio")
    positive_int(settings, "fit_utterances", "audio")
    if "frame_stack" in settings:
        positive_int(settings, "frame_stack", "audio")
