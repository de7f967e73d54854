"""3-Equations corpus: grammar, rendering, generation (speech/lips/image/manifest), resume.
The `corpus` and `manifest` fixtures (50 generated test utterances) are in conftest.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from dmlm.corpus import equations as E
from dmlm.corpus import build as B
from dmlm.corpus.build import build_split
from dmlm.corpus.image import render_image
from dmlm.errors import DmlmError
from dmlm.storage import Ragged, read_table

from conftest import SMALL_CORPUS as SETTINGS  # noqa: E402
from conftest import SMALL_CORPUS_SIZE as N  # noqa: E402


# --------------------------------------------------------------------------------- grammar
def test_equation_words_and_display():
    eq = E.Equation(E.Term(True, 3, 4, "x", 2), "+", E.Term(False, 5, 1, "y", None),
                    E.Term(False, 12, 1, None, None))
    assert eq.display() == "log 3/4x^2 + 5y = 12"
    assert eq.spoken() == "log of 3 over 4 x to the power of 2 plus 5 y equals 12"
    assert E.parse_equation(eq.display()) == eq
    assert E.ocr_reference([eq]) == "LOG 34X2 + 5Y = 12"
    eq2 = E.Equation(E.Term(False, None, 1, "z", None), "-", E.Term(False, 7, 1, None, 3),
                     E.Term(False, 1, 2, "b", None))
    assert eq2.display() == "z - 7^3 = 1/2b"
    assert eq2.spoken() == "z minus 7 to the power of 3 equals 1 over 2 b"
    with pytest.raises(ValueError):
        E.Term(False, 2, 4, None, None)  # not simplified


def test_random_equations_follow_the_grammar():
    rng = np.random.default_rng(0)
    n_words, saw = [], {"log": 0, "frac": 0, "omitted": 0, "exp": 0}
    for _ in range(2000):
        eq = E.random_equation(rng)
        assert E.parse_equation(eq.display()) == eq
        E.check_transcript(eq.spoken())
        n_words.append(len(eq.spoken().split()))
        for t in (eq.left, eq.middle, eq.right):
            saw["log"] += t.log
            saw["omitted"] += t.numerator is None
            saw["exp"] += t.exponent is not None
            if t.is_fraction:
                saw["frac"] += 1
                assert 1 <= t.numerator <= 50 and 2 <= t.denominator <= 50
                assert math.gcd(t.numerator, t.denominator) == 1  # simplified
            elif t.numerator is not None:
                assert 2 <= t.numerator <= 50
            if t.numerator is None:
                assert t.variable is not None
            if t.exponent is not None:
                assert 2 <= t.exponent <= 10
                assert t.variable is not None or not t.is_fraction
    assert all(v > 50 for v in saw.values()), saw
    assert 9 <= np.mean(n_words) <= 14
    assert len(E.VOCABULARY) == 85


def test_check_transcript_rejects_symbols():
    E.check_transcript("3 over 4 x plus 5 equals 12")
    with pytest.raises(DmlmError, match=r"\+"):
        E.check_transcript("3 x + 5 equals 12")
    with pytest.raises(DmlmError, match="51"):
        E.check_transcript("51 plus 2 equals 3")


def test_image_is_deterministic_and_boxes_do_not_overlap():
    rng = np.random.default_rng(3)
    for _ in range(30):
        eqs = [E.random_equation(rng) for _ in range(3)]
        seed = int(rng.integers(1 << 30))
        img, boxes = render_image(eqs, 450, 200, np.random.default_rng(seed), return_boxes=True)
        assert img.shape == (200, 450) and img.dtype == np.uint8
        assert np.array_equal(img, render_image(eqs, 450, 200, np.random.default_rng(seed)))
        for i in range(3):
            x0, y0, x1, y1 = boxes[i]
            assert 0 <= x0 < x1 <= 450 and 0 <= y0 < y1 <= 200
            assert img[y0:y1, x0:x1].min() < 64  # black ink inside the box
            for j in range(i + 1, 3):
                assert boxes[j][1] >= y1 or boxes[j][3] <= y0  # separate bands
        ink = img < 128
        inside = np.zeros_like(ink)
        for x0, y0, x1, y1 in boxes:
            inside[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = True
        assert not (ink & ~inside).any()  # no ink outside the measured boxes


# ------------------------------------------------------------------------------ generation
def test_manifest_columns_and_transcripts(corpus, manifest):
    assert list(manifest.columns) == ["id", "speaker", "rate", "pitch", "transcript", "equations",
                                      "spoken", "segments", "duration", "phonemes", "boxes"]
    assert len(manifest) == N
    assert manifest["id"].tolist() == [f"test-{i:06d}" for i in range(N)]
    images = np.load(corpus / "images.npy")
    assert images.shape == (N, 200, 450) and images.dtype == np.uint8
    for _, row in manifest.iterrows():
        eqs = [E.parse_equation(s) for s in json.loads(row["equations"])]
        spoken = json.loads(row["spoken"])
        assert len(eqs) == 3 and len(spoken) == 2 and len(set(spoken)) == 2
        assert all(0 <= k < 3 for k in spoken)  # both spoken equations are among the image's 3
        assert row["transcript"] == " ".join(eqs[k].spoken() for k in spoken)
        E.check_transcript(row["transcript"])
        for eq in eqs:
            for t in (eq.left, eq.middle, eq.right):
                if t.is_fraction:
                    assert math.gcd(t.numerator, t.denominator) == 1
    assert manifest["speaker"].nunique() > 1
    assert set(manifest["speaker"]) <= held_out_names()


def _envelope(audio, sr, hop=0.005):
    step = int(hop * sr)
    n = len(audio) // step
    frames = audio[: n * step].reshape(n, step)
    return np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)), hop


def test_segments_match_the_audio(corpus, manifest):
    audio = Ragged.load(corpus / "audio")
    sr = SETTINGS["speech"]["sample_rate"]
    assert audio.data.dtype == np.float32
    for i, row in manifest.iterrows():
        x = np.asarray(audio[i])
        assert abs(len(x) / sr - row["duration"]) < 1e-3
        (a0, a1), (b0, b1) = json.loads(row["segments"])
        assert a0 == 0 and abs(b0 - a1 - 1.0) < 1e-3 and abs(b1 - row["duration"]) < 1e-3
        gap = x[int(math.ceil(a1 * sr)) : int(b0 * sr)]
        assert len(gap) >= 0.99 * sr and np.abs(gap).max() < 1e-4  # silence between readings
        env, hop = _envelope(x, sr)
        thr = env.max() * 10 ** (-35 / 20)
        for s0, s1 in ((a0, a1), (b0, b1)):
            lo, hi = int(s0 / hop), int(math.ceil(s1 / hop))
            active = np.flatnonzero(env[lo:hi] > thr)
            assert len(active)
            e0, e1 = (lo + active[0]) * hop, (lo + active[-1] + 1) * hop
            assert abs(e0 - s0) <= 0.05 and abs(e1 - s1) <= 0.05, (row["id"], s0, s1, e0, e1)
        ph = json.loads(row["phonemes"])
        assert ph and all(0 <= p0 <= p1 <= row["duration"] + 1e-6 for p0, p1, _ in ph)
        assert all(ph[k][0] <= ph[k + 1][0] + 1e-9 for k in range(len(ph) - 1))


def test_lips_frames(corpus, manifest):
    lips = Ragged.load(corpus / "lips")
    assert lips.data.dtype == np.uint8 and lips.data.shape[1:] == (88, 88)
    assert len(lips) == N
    for i, row in manifest.iterrows():
        assert len(lips[i]) == math.ceil(row["duration"] * 25 - 1e-9)


def test_determinism_across_worker_counts(corpus, tmp_path):
    """Items do not depend on the worker count or on n: a 1-process build of the first 3 items
    equals the 2-process build's first 3."""
    out = tmp_path / "again"
    build_split(out, "test", 3, SETTINGS, threads=1, progress=False)
    big, small = read_table(corpus / "manifest.tsv"), read_table(out / "manifest.tsv")
    pd.testing.assert_frame_equal(big.iloc[:3].reset_index(drop=True), small)
    for name in ("audio", "lips"):
        a, b = Ragged.load(corpus / name), Ragged.load(out / name)
        for i in range(3):
            assert np.array_equal(a[i], b[i])
    assert np.array_equal(np.load(corpus / "images.npy")[:3], np.load(out / "images.npy"))
    # a different split name gives different utterances
    other = tmp_path / "other"
    build_split(other, "val", 1, SETTINGS, threads=1, progress=False)
    assert read_table(other / "manifest.tsv")["equations"][0] != big["equations"][0]


def held_out_names(settings=SETTINGS) -> set[str]:
    speakers = B.make_speakers_from(settings)
    return {speakers[k].name for k in B.split_speaker_indices(settings, "test", len(speakers))}


def test_held_out_test_speakers(manifest, tmp_path):
    speakers = B.make_speakers_from(SETTINGS)
    assert len(speakers) == 4
    test_pool = B.split_speaker_indices(SETTINGS, "test", 4)
    train_pool = B.split_speaker_indices(SETTINGS, "train", 4)
    assert len(test_pool) == 2 and sorted(test_pool + train_pool) == [0, 1, 2, 3]
    assert B.split_speaker_indices(SETTINGS, "val", 4) == train_pool
    assert test_pool == B.split_speaker_indices(json.loads(json.dumps(SETTINGS)), "test", 4)
    # the plans (cheap: no synthesis) of many utterances keep to their pools, and use all of them
    for split, pool in (("train", train_pool), ("val", train_pool), ("test", test_pool)):
        used = {B.plan_item(SETTINGS, split, i, pool).speaker_index for i in range(300)}
        assert used == set(pool), (split, used)
    # the generated test split speaks only with the held-out speakers; a built val split never
    assert set(manifest["speaker"]) == {speakers[k].name for k in test_pool}
    val = build_split(tmp_path / "val", "val", 3, SETTINGS, threads=1, progress=False)
    assert not set(val["speaker"]) & set(manifest["speaker"])
    # 0 (the default): every split uses every speaker, as before
    shared = json.loads(json.dumps(SETTINGS))
    del shared["speech"]["test_speakers"]
    assert B.split_speaker_indices(shared, "test", 4) == [0, 1, 2, 3]
    assert B.split_speaker_indices(shared, "train", 4) == [0, 1, 2, 3]
    # a different seed holds out other speakers at times, never a different number
    pools = {tuple(B.split_speaker_indices(dict(SETTINGS, seed=s), "test", 4)) for s in range(20)}
    assert len(pools) > 1 and all(len(p) == 2 for p in pools)
    for bad in (4, 9, -1):
        wrong = json.loads(json.dumps(SETTINGS))
        wrong["speech"]["test_speakers"] = bad
        with pytest.raises(DmlmError, match=r"corpus\.speech\.test_speakers"):
            build_split(tmp_path / "bad", "test", 1, wrong, progress=False)


_KILLED_CHILD = """
import json, os, sys, time
from pathlib import Path
from dmlm.corpus import build as B

out, marker, settings = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
make_item = B.make_item

def slow_after(settings, split, index, *args):
    item = make_item(settings, split, index, *args)
    if index == 6:  # items 0-5 (two chunks) are saved by now: tell the parent, then hang
        marker.write_text("6")
        time.sleep(120)
    return item

B.make_item = slow_after
B.build_split(out, "test", 8, settings, threads=1, progress=False, chunk_size=3)
"""


def _same_files(a, b):
    for name in ("manifest.tsv", "audio.npy", "audio.offsets.npy", "lips.npy", "lips.offsets.npy"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert np.array_equal(np.load(a / "images.npy"), np.load(b / "images.npy"))


def test_resume_after_sigkill(corpus, tmp_path, monkeypatch):
    """SIGKILL a generating process midway; started again, the build makes only the missing
    utterances and its files equal those of an uninterrupted build."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out, marker = tmp_path / "killed", tmp_path / "marker"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, str(out), str(marker),
                              json.dumps(SETTINGS)], start_new_session=True)
    try:
        deadline = time.time() + 120
        while not marker.exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the child did not reach item 6"
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the whole job, as a scheduler would
        child.wait()
    assert child.returncode == -signal.SIGKILL
    resume = out / B.RESUME_DIR
    assert sorted(p.name for p in resume.glob("chunk-*.npz")) == [
        "chunk-00000000-00000003.npz", "chunk-00000003-00000006.npz"]
    assert not (out / "manifest.tsv").exists()  # no output looks finished

    made = []
    real = B.make_item

    def counting(settings, split, index, *args):
        made.append(index)
        return real(settings, split, index, *args)

    monkeypatch.setattr(B, "make_item", counting)
    build_split(out, "test", 8, SETTINGS, threads=1, progress=False, chunk_size=3)
    assert made == [6, 7]  # only the chunk that was not finished
    assert not resume.exists()  # removed at the end
    monkeypatch.undo()

    # identical to an uninterrupted build (another chunk size and worker count)
    fresh = tmp_path / "fresh"
    build_split(fresh, "test", 8, SETTINGS, threads=2, progress=False, chunk_size=5)
    _same_files(out, fresh)
    assert np.array_equal(np.load(out / "images.npy"), np.load(corpus / "images.npy")[:8])
    # the first 8 of the 50-utterance fixture: the same utterances
    pd.testing.assert_frame_equal(read_table(out / "manifest.tsv"),
                                  read_table(corpus / "manifest.tsv").iloc[:8])


def test_resume_ignores_stale_progress(tmp_path):
    """Chunks left by other settings (fingerprint differs) or unreadable chunks are made again."""
    out = tmp_path / "s"
    resume = out / B.RESUME_DIR
    resume.mkdir(parents=True)
    (resume / "progress.json").write_text('{"fingerprint": "from other settings"}')
    (resume / "chunk-00000000-00000002.npz").write_bytes(b"junk")
    build_split(out, "val", 2, SETTINGS, threads=1, progress=False, chunk_size=2)
    assert not resume.exists()
    ref = tmp_path / "ref"
    build_split(ref, "val", 2, SETTINGS, threads=1, progress=False, chunk_size=2)
    _same_files(out, ref)
    # same fingerprint but a corrupt chunk: made again
    fingerprint = B._fingerprint(SETTINGS, "val", 2)
    resume.mkdir()
    (resume / "progress.json").write_text(json.dumps({"fingerprint": fingerprint}))
    (resume / "chunk-00000000-00000002.npz").write_bytes(b"PK\x03\x04 truncated")
    build_split(out, "val", 2, SETTINGS, threads=1, progress=False, chunk_size=2)
    _same_files(out, ref)


def test_bad_settings():
    bad = json.loads(json.dumps(SETTINGS))
    del bad["speech"]["voices"]
    with pytest.raises(DmlmError, match=r"corpus\.speech\.voices"):
        build_split("/nonexistent/x", "test", 1, bad)
