"""Text-to-speech with phoneme timing, through libespeak-ng (ctypes, no subprocess).

``synthesize(text, voice)`` returns the waveform (float32 mono in [-1, 1], resampled from espeak's
native 22,050 Hz to the requested rate) and espeak's phoneme events as ``(start_s, end_s,
mnemonic)`` intervals. Nothing is trimmed: interval times are positions in the returned audio.
Interval i ends where interval i + 1 starts (the last one ends at the end of the audio); times are
non-decreasing, and espeak sometimes emits zero-length phonemes (e.g. the ``l`` of "twelve"), which
are kept. Phoneme names are espeak's ASCII mnemonics (``T``, ``i:``, ``aI``, ``@L``, ``_:`` ...),
not IPA; pauses are ``_``/``_:``.

Voice names (checked on Debian espeak-ng 1.51): ``<voice>`` or ``<voice>+<variant>``, where
``<voice>`` is matched case-insensitively against the *file names* under ``espeak-ng-data/lang``
(or a voice's full ``name`` field), and ``<variant>`` is a file name under
``espeak-ng-data/voices/!v`` (``m1``-``m8``, ``f1``-``f5``, ``klatt``, ``whisper``, ...).
So ``en-us``, ``en``, ``en-gb-x-rp``, ``en-029``, ``en-us-nyc``, ``en-gb-scotland`` and e.g.
``en-us+f1``, ``en+m3``, ``en-gb-x-rp+f2``, ``en-029+m1`` all work; ``en-gb`` does **not** (British
English is the file ``en``, whose *language* is en-gb), nor does ``en-gb+m1``. espeak itself
silently ignores an unknown variant (``en-us+zz`` sounds like ``en-us``); here both an unknown
voice and an unknown variant raise ``DmlmError``.

Determinism: the same (text, voice, sample_rate) always gives the same samples, whatever was
spoken before in the process, because every call loads a fresh copy of the library (see
``_Engine``; ~5 ms). The library is not thread-safe: every call holds a module lock, so threads
serialise; use processes (fork or spawn) for parallel synthesis.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dmlm.errors import DmlmError

__all__ = ["Voice", "Speech", "synthesize", "make_speakers", "silence", "check_voice", "native_sample_rate",
           "espeak_text", "LETTER_PHONEMES"]

#: Words espeak would not read as a letter name, with the phoneme input (espeak mnemonics) that it
#: reads instead. Checked on espeak-ng 1.51 (en-us, en, en-gb-x-rp, en-029) in the contexts of the
#: grammar ("3 _ plus", "log of _ to the power of 2", "over 4 _ equals _"): the single letter "a" is
#: read as the article (``a#``, a schwa, and merged into "of a" as ``@v@``); every other letter a-z
#: is read as its letter name ("i" ``aI``, "u" ``ju:``, "o" ``oU``, "e" ``i:``, "z" ``zi:``/``zEd``).
LETTER_PHONEMES = {"a": "[['eI]]"}


def espeak_text(text: str) -> str:
    """The text given to espeak for ``text`` (a transcript): every word listed in
    :data:`LETTER_PHONEMES` is replaced by its phoneme input, so that the variable "a" is spoken
    "ay". The transcript itself is unchanged; only what espeak reads differs."""
    return " ".join(LETTER_PHONEMES.get(w, w) for w in text.split(" "))

# --- espeak-ng constants (speak_lib.h) -------------------------------------------------------------
AUDIO_OUTPUT_SYNCHRONOUS = 2
espeakINITIALIZE_PHONEME_EVENTS = 0x0001
espeakINITIALIZE_DONT_EXIT = 0x8000
POS_CHARACTER = 1
espeakCHARS_UTF8 = 1
espeakPHONEMES = 0x100  # text may hold phoneme input in [[ ]] (as the espeak-ng command line allows)
espeakRATE, espeakPITCH = 1, 3
EE_OK = 0
EVENT_LIST_TERMINATED, EVENT_PHONEME, EVENT_SAMPLERATE = 0, 7, 8
RATE_MIN, RATE_MAX = 80, 450  # espeak clamps outside this range


@dataclass(frozen=True)
class Voice:
    name: str  # espeak voice with optional variant, e.g. "en-us+f1"
    rate_wpm: int
    pitch: int = 50  # espeak pitch 0-99


@dataclass
class Speech:
    audio: np.ndarray  # float32 mono in [-1, 1] at sample_rate
    sample_rate: int
    phonemes: list[tuple[float, float, str]]  # (start_s, end_s, mnemonic), in order

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # samples since the start of this espeak_Synth call
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class _Engine:
    """One freshly loaded and initialised espeak-ng, used for one call and then unloaded.

    espeak-ng keeps synthesis state in C statics that no API resets (e.g. the pitch-flutter phase
    in wavegen.c), so the same text and voice give slightly different audio and timing depending
    on what the process spoke before. Loading the library afresh for every utterance (dlopen,
    espeak_Initialize, ..., espeak_Terminate, dlclose: about 5 ms) makes each utterance exactly
    what a new process would produce. This needs libespeak-ng to be loaded by nobody else in the
    process (otherwise dlclose cannot unload it).
    """

    def __init__(self) -> None:
        name = _library_name()
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            raise DmlmError(f"cannot load libespeak-ng ({name}): {e}; install espeak-ng") from e
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Terminate.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        self.lib = lib
        self.sample_rate = lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 200, None, espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_DONT_EXIT)
        if self.sample_rate <= 0:
            self._unload()
            raise DmlmError(f"espeak_Initialize failed ({self.sample_rate}); is espeak-ng-data installed?")
        path = ctypes.c_char_p()
        self.version = lib.espeak_Info(ctypes.byref(path)).decode()
        self.data_path = Path(path.value.decode()) if path.value else None
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, str]] = []  # (sample, mnemonic) of phoneme events
        self.callback = _CALLBACK(self._on_synth)  # keep a reference: espeak holds only the pointer
        lib.espeak_SetSynthCallback(self.callback)

    def _unload(self) -> None:
        import _ctypes

        handle, self.lib = self.lib._handle, None
        _ctypes.dlclose(handle)

    def close(self) -> None:
        if self.lib is not None:
            self.lib.espeak_Terminate()
            self._unload()

    def __enter__(self) -> "_Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def variants(self) -> set[str] | None:
        """File names of the voice variants (``voices/!v``), or None if the folder is not found."""
        if self.data_path is None or not (self.data_path / "voices" / "!v").is_dir():
            return None
        return {p.name for p in (self.data_path / "voices" / "!v").iterdir() if p.is_file()}

    def _on_synth(self, wav, n, events) -> int:
        if n > 0 and wav:
            # (not np.ctypeslib.as_array: it caches a ctypes array type per distinct length, a leak)
            self.chunks.append(np.frombuffer(ctypes.string_at(wav, 2 * n), dtype=np.int16))
        i = 0
        while True:
            ev = events[i]
            if ev.type == EVENT_LIST_TERMINATED:
                break
            if ev.type == EVENT_PHONEME:
                name = bytes(ev.id.string).split(b"\0", 1)[0].decode("ascii", "replace")
                self.events.append((int(ev.sample), name))
            i += 1
        return 0  # continue synthesis

    def set_voice(self, name: str) -> None:
        base, plus, variant = name.partition("+")
        if not base or (plus and not variant) or "+" in variant:
            raise DmlmError(f"espeak voice {name!r}: expected '<voice>' or '<voice>+<variant>'")
        if variant:
            known = self.variants()
            if known is not None and variant not in known:
                raise DmlmError(f"espeak voice {name!r}: espeak-ng {self.version} has no variant {variant!r} "
                                f"(some it has: {', '.join(sorted(k for k in known if len(k) <= 2))})")
        if self.lib.espeak_SetVoiceByName(name.encode()) != EE_OK:
            hint = " (British English is 'en' or 'en-gb-x-rp', not 'en-gb')" if base.lower().startswith("en-gb") else ""
            raise DmlmError(f"espeak voice {name!r}: espeak-ng {self.version} has no voice {base!r}{hint}")

    def synth(self, text: str, voice: Voice) -> tuple[np.ndarray, list[tuple[int, str]]]:
        self.set_voice(voice.name)
        self.lib.espeak_SetParameter(espeakRATE, int(np.clip(voice.rate_wpm, RATE_MIN, RATE_MAX)), 0)
        self.lib.espeak_SetParameter(espeakPITCH, int(np.clip(voice.pitch, 0, 99)), 0)
        self.chunks, self.events = [], []
        data = text.encode("utf-8") + b"\0"
        # some voices (klatt, breath) draw noise from libc rand(): seed it from the utterance
        _libc_srand(zlib.crc32(voice.name.encode() + b"\0" + data))
        buf = ctypes.create_string_buffer(data, len(data))
        rc = self.lib.espeak_Synth(buf, len(data), 0, POS_CHARACTER, 0, espeakCHARS_UTF8 | espeakPHONEMES,
                                   None, None)
        self.lib.espeak_Synchronize()
        if rc != EE_OK:
            raise DmlmError(f"espeak_Synth failed (error {rc}) for voice {voice.name!r}, text {text[:60]!r}")
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        events, self.chunks, self.events = self.events, [], []
        return audio, events


@functools.lru_cache(maxsize=1)
def _library_name() -> str:
    return ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"


_unload_checked = False


def _check_unloaded() -> None:
    """Once per process: warn if dlclose did not unload libespeak-ng (someone else holds it), as
    then espeak's state carries over between utterances and synthesis is no longer reproducible."""
    global _unload_checked
    if _unload_checked:
        return
    _unload_checked = True
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return
    if "libespeak-ng" in maps:
        warnings.warn("libespeak-ng stays loaded after dlclose (another module holds it): espeak state "
                      "will carry over between utterances and audio may differ from run to run",
                      RuntimeWarning, stacklevel=3)


def _libc_srand(seed: int) -> None:
    libc = ctypes.CDLL(None)
    libc.srand.argtypes = [ctypes.c_uint]
    libc.srand(seed & 0x7FFFFFFF)


_lock = threading.Lock()
_known_voices: set[str] = set()
_native_rate: int | None = None


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a lock held by another thread at fork time would never be released


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def native_sample_rate() -> int:
    """espeak-ng's output rate (22,050 Hz for the standard voices)."""
    global _native_rate
    with _lock:
        if _native_rate is None:
            with _Engine() as eng:
                _native_rate = eng.sample_rate
        return _native_rate


def check_voice(name: str) -> None:
    """Raise DmlmError unless ``name`` (voice[+variant]) is a voice this espeak-ng has."""
    with _lock:
        if name in _known_voices:
            return
        with _Engine() as eng:
            eng.set_voice(name)
        _known_voices.add(name)


def _resample(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    """Polyphase (zero-phase, Kaiser-windowed sinc) resampling with scipy.

    Not torchaudio: once torch has run an op in a process, a forked worker that calls torch again
    can deadlock in the OpenMP pool (seen with torchaudio.functional.resample here), and corpus
    generation forks workers. scipy's upfirdn is single-threaded and fork-safe."""
    if orig == new or len(x) == 0:
        return x
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(orig, new)
    return resample_poly(x, new // g, orig // g).astype(np.float32, copy=False)


def synthesize(text: str, voice: Voice, sample_rate: int = 16000, letter_names: bool = True) -> Speech:
    """Speak ``text`` with ``voice``; audio at ``sample_rate`` plus phoneme intervals in seconds.

    With ``letter_names`` (default) the text goes through :func:`espeak_text` first, so a lone
    "a" is read as the letter ("ay"), not as the article. Text in ``[[ ]]`` is phoneme input."""
    if sample_rate <= 0:
        raise DmlmError(f"sample_rate must be positive, got {sample_rate}")
    if letter_names:
        text = espeak_text(text)
    with _lock:
        with _Engine() as eng:
            pcm, events = eng.synth(text, voice)
            native = eng.sample_rate
        _check_unloaded()
    n_native = len(pcm)
    audio = _resample(pcm.astype(np.float32) / 32768.0, native, sample_rate)
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)
    starts = [min(max(s, 0), n_native) for s, _ in events]
    starts = np.maximum.accumulate(np.asarray(starts, dtype=np.int64)) if starts else np.zeros(0, np.int64)
    ends = np.append(starts[1:], n_native)
    phonemes = [(float(s) / native, float(e) / native, name)
                for s, e, (_, name) in zip(starts, ends, events)]
    return Speech(audio=audio, sample_rate=sample_rate, phonemes=phonemes)


def make_speakers(voices: list[str], variants: list[str], rate_wpm: int, rate_jitter: float,
                  pitch_jitter: int, seed: int) -> list[Voice]:
    """The cross product ``voices`` x ``variants`` (voice-major order), each with a speaking rate of
    ``rate_wpm * (1 + u * rate_jitter)`` and pitch ``50 + v * pitch_jitter`` (u, v uniform in
    [-1, 1], drawn in that order per speaker from ``default_rng(seed)``). Every name is checked
    against espeak-ng (DmlmError if unknown). An empty variant gives the plain voice."""
    rng = np.random.default_rng(seed)
    speakers = []
    for v in voices:
        for var in variants:
            name = f"{v}+{var}" if var else v
            check_voice(name)
            u, w = rng.uniform(-1.0, 1.0, size=2)
            rate = int(np.clip(round(rate_wpm * (1.0 + u * rate_jitter)), RATE_MIN, RATE_MAX))
            pitch = int(np.clip(round(50 + w * pitch_jitter), 0, 99))
            speakers.append(Voice(name=name, rate_wpm=rate, pitch=pitch))
    return speakers


def silence(seconds: float, sample_rate: int) -> np.ndarray:
    """``seconds`` of digital silence (float32 zeros), rounded to whole samples."""
    return np.zeros(max(0, int(round(seconds * sample_rate))), dtype=np.float32)
