"""Speech synthesis through libespeak-ng (real audio, real phoneme events) and the lip renderer."""

from __future__ import annotations

import math
import multiprocessing as mp
import re

import numpy as np
import pytest

from dmlm.corpus import lips as L
from dmlm.corpus import speech as S
from dmlm.errors import DmlmError

SENTENCE = "3 x plus 5 equals 12 and 2 y minus 4 equals 6"  # 12 words
VOICE = S.Voice("en-us+f1", rate_wpm=160, pitch=50)
PAUSES = {"_", "_:", "_!", ";"}


@pytest.fixture(scope="module")
def speech() -> S.Speech:
    return S.synthesize(SENTENCE, VOICE, sample_rate=16000)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


# --- speech -------------------------------------------------------------------------------------

def test_synthesize_audio_and_phoneme_timing(speech):
    assert speech.sample_rate == 16000
    assert speech.audio.dtype == np.float32 and speech.audio.ndim == 1
    assert np.all(np.abs(speech.audio) <= 1.0) and rms(speech.audio) > 0.01
    duration = len(speech.audio) / 16000
    assert 2.0 < duration < 8.0  # 12 words at 160 wpm: about 4.5 s
    ph = speech.phonemes
    assert len(ph) > 10
    starts = np.array([s for s, _, _ in ph])
    ends = np.array([e for _, e, _ in ph])
    assert np.all(np.diff(starts) >= 0) and np.all(ends >= starts)
    assert np.allclose(ends[:-1], starts[1:])  # contiguous: each ends where the next starts
    assert 0.0 <= starts[0] < 0.1
    assert abs(ends[-1] - duration) < 0.01
    names = [p for _, _, p in ph]
    assert all(isinstance(p, str) and p and p.isascii() for p in names)
    # espeak mnemonics of this sentence ("three", "plus", "five", "equals", "minus")
    for expected in ["T", "p", "l", "s", "f", "aI", "m", "n", "i:"]:
        assert expected in names, (expected, names)


def test_phonemes_locate_the_energy():
    """Concatenate two utterances around 1 s of silence: energy sits in the spoken phonemes of
    each part (timing is consistent with the samples), the gap is silent."""
    sr = 16000
    a = S.synthesize("5 x equals 10", VOICE, sr)
    b = S.synthesize("y minus 1 equals 8", S.Voice("en+m3", 175, 40), sr)
    gap = S.silence(1.0, sr)
    assert gap.dtype == np.float32 and len(gap) == sr and not gap.any()
    x = np.concatenate([a.audio, gap, b.audio])
    offset_b = (len(a.audio) + len(gap)) / sr

    def region(start, end):
        return x[int(round(start * sr)):int(round(end * sr))]

    for sp, offset in [(a, 0.0), (b, offset_b)]:
        spoken = [(s + offset, e + offset) for s, e, p in sp.phonemes if p not in PAUSES and e - s > 0.03]
        vowels = [(s + offset, e + offset) for s, e, p in sp.phonemes
                  if L.VISEMES[L.phoneme_to_viseme(p)].endswith(("vowel", "front", "rounded")) and e - s > 0.03]
        assert len(spoken) > 5 and vowels
        assert rms(np.concatenate([region(s, e) for s, e in spoken])) > 0.03
        assert min(rms(region(s, e)) for s, e in vowels) > 0.02  # every vowel is audible
    assert rms(region(len(a.audio) / sr, offset_b)) == 0.0
    # the audio before the first phoneme event and after the trailing pause is (near) silent
    assert rms(a.audio[: int(a.phonemes[0][0] * sr)]) < 0.01


def test_deterministic_and_voices_differ(speech):
    again = S.synthesize(SENTENCE, VOICE)
    assert np.array_equal(again.audio, speech.audio) and again.phonemes == speech.phonemes
    # espeak keeps state between utterances; synthesize must not depend on what was said before
    S.synthesize("something else entirely, with fricatives: shh, fff, sss", S.Voice("en-029+m2", 200, 70))
    assert np.array_equal(S.synthesize(SENTENCE, VOICE).audio, speech.audio)
    other = S.synthesize(SENTENCE, S.Voice("en-gb-x-rp+m1", 160, 50))
    n = min(len(other.audio), len(speech.audio))
    assert len(other.audio) != len(speech.audio) or not np.allclose(other.audio[:n], speech.audio[:n])
    assert rms(other.audio[:n] - speech.audio[:n]) > 0.01
    # rate and pitch matter too
    slower = S.synthesize(SENTENCE, S.Voice("en-us+f1", 120, 50))
    assert len(slower.audio) > 1.15 * len(speech.audio)
    higher = S.synthesize(SENTENCE, S.Voice("en-us+f1", 160, 80))
    assert not np.array_equal(higher.audio[:n], speech.audio[:n])


def test_sample_rate():
    s22 = S.synthesize("4 equals 4", VOICE, sample_rate=22050)
    s16 = S.synthesize("4 equals 4", VOICE, sample_rate=16000)
    assert S.native_sample_rate() == 22050
    assert abs(len(s16.audio) - len(s22.audio) * 16000 / 22050) <= 1
    assert s16.phonemes == s22.phonemes  # timing in seconds does not depend on the rate


def _synth_sum(text: str) -> bytes:
    return S.synthesize(text, VOICE).audio.tobytes()


def test_forked_worker_gives_the_same_audio(speech):
    with mp.get_context("fork").Pool(1) as pool:
        got = pool.map_async(_synth_sum, [SENTENCE]).get(timeout=60)
    assert got[0] == speech.audio.tobytes()


@pytest.mark.parametrize("name", ["xx-nonexistent", "en-gb", "en-gb+m1", "en-us+nosuchvariant", "en-us+"])
def test_unknown_voice_raises(name):
    with pytest.raises(DmlmError, match=re.escape(f"'{name}'")):  # the message names the voice
        S.synthesize("1 plus 1", S.Voice(name, 160, 50))
    with pytest.raises(DmlmError):
        S.check_voice(name)


def test_make_speakers():
    voices, variants = ["en-us", "en", "en-gb-x-rp", "en-029"], ["m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4"]
    sp = S.make_speakers(voices, variants, rate_wpm=175, rate_jitter=0.1, pitch_jitter=15, seed=3)
    assert [v.name for v in sp] == [f"{v}+{x}" for v in voices for x in variants]
    assert all(157 <= v.rate_wpm <= 193 and 35 <= v.pitch <= 65 for v in sp)
    assert len({(v.rate_wpm, v.pitch) for v in sp}) > 20
    assert sp == S.make_speakers(voices, variants, 175, 0.1, 15, seed=3)
    assert sp != S.make_speakers(voices, variants, 175, 0.1, 15, seed=4)
    flat = S.make_speakers(["en"], ["m1"], 175, 0.0, 0, seed=0)
    assert flat == [S.Voice("en+m1", 175, 50)]
    with pytest.raises(DmlmError, match="en-gb"):
        S.make_speakers(["en-gb"], ["m1"], 175, 0.1, 15, seed=0)


# --- lips ---------------------------------------------------------------------------------------

def test_viseme_map():
    assert len(L.VISEMES) >= 12
    v = {name: i for i, name in enumerate(L.VISEMES)}
    assert all(L.phoneme_to_viseme(p) == v["bilabial"] for p in ["p", "b", "m"])
    assert L.phoneme_to_viseme("f") == L.phoneme_to_viseme("v") == v["labiodental"]
    assert L.phoneme_to_viseme("aa") == L.phoneme_to_viseme("A:") == v["open_vowel"]
    assert L.phoneme_to_viseme("i:") == v["close_front"]
    assert L.phoneme_to_viseme("u:") == v["close_rounded"]
    assert L.phoneme_to_viseme("_") == L.phoneme_to_viseme("_:") == v["silence"]
    assert L.phoneme_to_viseme("t[") == v["alveolar"]  # variant marks are stripped
    assert 0 <= L.phoneme_to_viseme("Qx9") < len(L.VISEMES)


def mouth_dark_pixels(frame: np.ndarray) -> int:
    c = frame[24:72, 14:74]  # the central mouth area
    return int((c < 55).sum())


def test_render_lips_shape_and_articulation():
    # 0.4 s of /m/ then 0.4 s of /aa/
    ph = [(0.0, 0.1, "_"), (0.1, 0.5, "m"), (0.5, 0.9, "aa"), (0.9, 1.0, "_")]
    for seed in range(6):
        video = L.render_lips(ph, 1.0, speaker_seed=seed, fps=25, size=88, noise_seed=seed)
        assert video.dtype == np.uint8 and video.shape == (25, 88, 88)
        closed, open_ = mouth_dark_pixels(video[7]), mouth_dark_pixels(video[17])  # t = 0.3 s, 0.7 s
        assert open_ > 150 and closed < open_ / 4, (seed, closed, open_)
    art = L.articulation(ph, 1.0, fps=25)
    assert art.shape == (25, 5) and art[7, 0] < 0.1 and art[17, 0] > 0.8
    # frame count follows the duration
    assert L.render_lips(ph, 2.01, 0).shape == (math.ceil(2.01 * 25), 88, 88)
    assert L.render_lips(ph, 1.0, 0, fps=30, size=64).shape == (30, 64, 64)
    assert L.render_lips([], 0.0, 0).shape == (0, 88, 88)


def test_render_lips_deterministic_and_speaker_specific(speech):
    dur = len(speech.audio) / speech.sample_rate
    a = L.render_lips(speech.phonemes, dur, speaker_seed=11, noise_seed=5)
    assert a.shape == (math.ceil(dur * 25), 88, 88)
    assert np.array_equal(a, L.render_lips(speech.phonemes, dur, speaker_seed=11, noise_seed=5))
    other_speaker = L.render_lips(speech.phonemes, dur, speaker_seed=12, noise_seed=5)
    assert np.abs(other_speaker.astype(int) - a).mean() > 5
    other_noise = L.render_lips(speech.phonemes, dur, speaker_seed=11, noise_seed=6)
    diff = np.abs(other_noise.astype(int) - a)
    assert 0 < diff.mean() < 6  # sensor noise only
    # the mouth moves: frames differ over the utterance and the opening varies
    opening = np.array([mouth_dark_pixels(f) for f in a])
    assert opening.max() > 3 * max(opening.min(), 1) and opening.std() > 10


# --- letter names -------------------------------------------------------------------------------

def _names(speech: S.Speech) -> list[str]:
    return [p for _, _, p in speech.phonemes if p not in PAUSES]


def test_variable_a_is_read_as_the_letter():
    """espeak reads a lone "a" as the article (``a#``, a schwa); the corpus makes it say "ay"
    (``eI``) through phoneme input, without changing the transcript."""
    assert S.espeak_text("3 a plus a equals 5") == "3 [['eI]] plus [['eI]] equals 5"
    assert S.espeak_text("log of 3 over 4 x") == "log of 3 over 4 x"  # other words unchanged
    for voice in [VOICE, S.Voice("en+m1", 175, 50), S.Voice("en-gb-x-rp+f2", 175, 50),
                  S.Voice("en-029+m3", 175, 50)]:
        alone = S.synthesize("a", voice)
        assert _names(alone) == ["eI"], (voice, _names(alone))
        for text in ["3 a plus 5", "log of a to the power of 2", "4 a equals 3 a"]:
            n_a = text.split().count("a")  # no other word of these texts has an eI
            raw = _names(S.synthesize(text, voice, letter_names=False))
            fixed = S.synthesize(text, voice)
            assert raw.count("eI") < n_a  # the problem: the article, a schwa (a# or @)
            assert _names(fixed).count("eI") == n_a, (voice, text, _names(fixed))
        # "ay" is a full diphthong: longer than the article's schwa
        ay = [e - s for s, e, p in S.synthesize("3 a plus 5", voice).phonemes if p == "eI"]
        schwa = [e - s for s, e, p in S.synthesize("3 a plus 5", voice, letter_names=False).phonemes
                 if p == "a#"]
        assert len(ay) == len(schwa) == 1 and ay[0] > 1.2 * schwa[0] and ay[0] > 0.08, (ay, schwa)


# espeak mnemonics of each letter name (en-us), read inside an equation ("3 <letter> plus")
LETTER_NAMES = {
    "a": "eI", "b": "b i:", "c": "s i:", "d": "d i:", "e": "i:", "f": "E f", "g": "dZ i:",
    "h": "eI tS", "i": "aI", "j": "dZ eI", "k": "k eI", "l": "E l", "m": "E m", "n": "E n",
    "o": "oU", "p": "p i:", "q": "k j u:", "r": "A@", "s": "E s", "t": "t i:", "u": "j u:",
    "v": "v i:", "w": "d V b @L j u:", "x": "E k s", "y": "w aI", "z": "z i:",
}


def test_every_letter_is_read_as_its_name():
    voice = S.Voice("en-us+m1", 175, 50)
    prefix, suffix = _names(S.synthesize("3", voice)), ["p", "l", "V", "s"]
    for letter, expected in LETTER_NAMES.items():
        names = _names(S.synthesize(f"3 {letter} plus", voice))
        assert names[: len(prefix)] == prefix and names[-4:] == suffix, (letter, names)
        assert names[len(prefix):-4] == expected.split(), (letter, names)
