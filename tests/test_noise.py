"""SNR mixing (noise bank: the session fixture noise_bank, conftest.py): real espeak speech, real files, no mocks."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from dmlm.errors import DmlmError
from dmlm.noise.mix import measured_snr, mix_split, noise_windows, window_indices
from dmlm.storage import Ragged, read_table, save_ragged, write_table

SR = 16000
SNRS = [20, 10, 5, 0, -5, -10, -20]
SENTENCES = [
    ("three plus four equals seven", "nine minus two equals seven"),
    ("twelve divided by three equals four", "five times six equals thirty"),
    ("eight plus one equals nine", "two times two equals four"),
    ("ten minus seven equals three", "six plus six equals twelve"),
    ("fifteen minus five equals ten", "one plus zero equals one"),
    ("four times four equals sixteen", "twenty minus one equals nineteen"),
]
VOICES = ["en-us+m1", "en+f2", "en-us+f3", "en+m3", "en-us+m4", "en+f4"]


def _trim(x):
    loud = np.flatnonzero(np.abs(x) > 1e-3)
    return x[loud[0]:loud[-1] + 1]


def _write_corpus(folder, utts):
    """utts: list of (id, audio, segments); writes manifest.tsv + ragged audio like the corpus stage."""
    folder.mkdir(parents=True, exist_ok=True)
    write_table(folder / "manifest.tsv", [
        {"id": uid, "segments": json.dumps(seg), "duration": round(len(a) / SR, 4)} for uid, a, seg in utts
    ])
    save_ragged(folder / "audio", [a for _, a, _ in utts], dtype=np.float32)
    return folder


@pytest.fixture(scope="module")
def utterances():
    """Two espeak-spoken equations with 1 s of silence between (0.3 s lead-in and tail), peak 0.5."""
    from dmlm.corpus.speech import Voice, synthesize

    utts = []
    for i, ((a, b), voice) in enumerate(zip(SENTENCES, VOICES)):
        v = Voice(name=voice, rate_wpm=175, pitch=50)
        s1 = _trim(synthesize(a, v, SR).audio.astype(np.float64))
        s2 = _trim(synthesize(b, v, SR).audio.astype(np.float64))
        lead, gap = np.zeros(int(0.3 * SR)), np.zeros(SR)
        audio = np.concatenate([lead, s1, gap, s2, lead])
        peak = np.max(np.abs(audio))
        audio = (audio * 0.5 / peak).astype(np.float32)
        t1 = len(lead) / SR
        seg = [[t1, t1 + len(s1) / SR], [t1 + (len(s1) + len(gap)) / SR, t1 + (len(s1) + len(gap) + len(s2)) / SR]]
        utts.append((f"test-{i:06d}", audio, seg))
    return utts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, utterances):
    return _write_corpus(tmp_path_factory.mktemp("corpus") / "test", utterances)


def _mix(corpus, bank, out, **kw):
    settings = {"placement": "second_half", "snrs": [0], "fraction_noisy": 1.0, "seed": 1234}
    settings.update(kw)
    mix_split(corpus, bank, out, settings)
    return Ragged.load(out, mmap=False), read_table(f"{out}.snr.tsv")


# ----------------------------------------------------------------------------- mixing

def test_snr_exact_and_clean_parts_scaled_once(corpus, noise_bank, utterances, tmp_path):
    clipped_seen = unclipped_seen = False
    for snr in SNRS:
        out, tsv = _mix(corpus, noise_bank, tmp_path / f"snr{snr}", snrs=[snr])
        assert len(out) == len(utterances) and list(tsv["id"]) == [u for u, _, _ in utterances]
        for i, (uid, clean, seg) in enumerate(utterances):
            mixed = np.asarray(out[i])
            assert mixed.dtype == np.float32 and mixed.shape == clean.shape
            assert np.max(np.abs(mixed)) <= 0.99 + 1e-6  # no sample near 1.0, none above
            windows = noise_windows(seg, len(clean) / SR, "second_half")
            scale = float(tsv["scale"][i])
            # the public function, with the factor estimated from the clean parts
            assert measured_snr(clean, mixed, windows, SR) == pytest.approx(snr, abs=0.1)
            assert float(tsv["measured_snr"][i]) == pytest.approx(snr, abs=0.1)
            assert float(tsv["target_snr"][i]) == snr
            assert tsv["noise"][i] != "" and float(tsv["gain"][i]) > 0
            # outside the windows: the clean audio times one global factor
            outside = np.ones(len(clean), bool)
            outside[window_indices(windows, len(clean), SR)] = False
            c, m = clean[outside].astype(np.float64), mixed[outside].astype(np.float64)
            np.testing.assert_allclose(m, scale * c, rtol=1e-6, atol=1e-7)
            loud = np.abs(c) > 1e-3
            ratios = m[loud] / c[loud]
            assert ratios.max() - ratios.min() < 1e-5
            if scale == 1.0:
                unclipped_seen = True
                assert np.array_equal(m, c)  # bit-identical when no clipping was needed
            else:
                clipped_seen = True
                assert 0 < scale < 1
                assert np.max(np.abs(mixed)) == pytest.approx(0.99, abs=1e-6)
            # inside the windows something was added
            inside = ~outside
            assert not np.allclose(mixed[inside], scale * clean[inside])
    assert clipped_seen and unclipped_seen


def test_whole_placement(corpus, noise_bank, utterances, tmp_path):
    out, tsv = _mix(corpus, noise_bank, tmp_path / "whole", placement="whole", snrs=[-5])
    for i, (uid, clean, seg) in enumerate(utterances):
        mixed = np.asarray(out[i])
        whole = [(0.0, len(clean) / SR)]
        assert measured_snr(clean, mixed, whole, SR, scale=float(tsv["scale"][i])) == pytest.approx(-5, abs=0.1)
        assert np.all(mixed[: int(0.3 * SR)] != 0)  # noise in the lead-in silence too
        assert np.max(np.abs(mixed)) <= 1.0


def _windows_of(tsv, i):
    return [tuple(w) for w in json.loads(tsv["windows"][i])]


@pytest.mark.parametrize("fraction", [0.5, 0.2])
def test_random_segment_placement(corpus, noise_bank, utterances, tmp_path, fraction):
    tsvs = {}
    for snr in (20, 0, -20):
        out, tsv = _mix(corpus, noise_bank, tmp_path / f"rs{snr}", placement="random_segment",
                        snrs=[snr], segment_fraction=fraction)
        tsvs[snr] = tsv
        for i, (uid, clean, seg) in enumerate(utterances):
            mixed = np.asarray(out[i])
            windows = _windows_of(tsv, i)
            assert len(windows) == 1
            (start, end), first, last = windows[0], seg[0][0], seg[-1][1]
            assert first - 1e-4 <= start < end <= last + 1e-4  # inside the spoken span
            assert end - start == pytest.approx(fraction * (last - first), abs=2 / SR)
            assert measured_snr(clean, mixed, windows, SR) == pytest.approx(snr, abs=0.1)
            assert float(tsv["measured_snr"][i]) == pytest.approx(snr, abs=0.1)
            assert np.max(np.abs(mixed)) <= 0.99 + 1e-6
            scale = float(tsv["scale"][i])
            outside = np.ones(len(clean), bool)
            outside[window_indices(windows, len(clean), SR)] = False
            np.testing.assert_allclose(mixed[outside].astype(np.float64), scale * clean[outside].astype(np.float64),
                                       rtol=1e-6, atol=1e-7)
            if scale == 1.0:
                assert np.array_equal(mixed[outside], clean[outside])
            assert not np.allclose(mixed[~outside], scale * clean[~outside])
    # one window per utterance, shared by every SNR condition (paired), and different across utterances
    assert list(tsvs[20]["windows"]) == list(tsvs[0]["windows"]) == list(tsvs[-20]["windows"])
    starts = [_windows_of(tsvs[0], i)[0][0] - utterances[i][2][0][0] for i in range(len(utterances))]
    assert len(set(np.round(starts, 3))) == len(utterances)


def test_windows_recorded_for_every_placement(corpus, noise_bank, utterances, tmp_path):
    _, tsv = _mix(corpus, noise_bank, tmp_path / "sh", snrs=[5])
    for i, (_, clean, seg) in enumerate(utterances):
        expected = noise_windows(seg, len(clean) / SR, "second_half")
        np.testing.assert_allclose(_windows_of(tsv, i), expected, atol=1 / SR)
    with pytest.raises(DmlmError, match="segment_fraction"):
        _mix(corpus, noise_bank, tmp_path / "x", placement="random_segment", segment_fraction=0)


def test_fraction_zero_is_clean(corpus, noise_bank, utterances, tmp_path):
    out, tsv = _mix(corpus, noise_bank, tmp_path / "clean", snrs=[], fraction_noisy=0.0)
    for i, (_, clean, _) in enumerate(utterances):
        assert np.array_equal(np.asarray(out[i]), clean)
    assert (tsv["target_snr"] == "").all() and (tsv["measured_snr"] == "").all() and (tsv["noise"] == "").all()
    # a missing bank does not matter when nothing is noised
    out2, _ = _mix(corpus, tmp_path / "no-such-bank", tmp_path / "clean2", snrs=[], fraction_noisy=0.0)
    assert np.array_equal(out2.data, out.data)


def test_fraction_and_snr_choice(tmp_path, noise_bank):
    """Half noised on average, SNRs drawn from the list, clean rows keep the clean audio."""
    rng = np.random.default_rng(3)
    utts = []
    for i in range(300):
        x = (0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * np.arange(SR) / SR)).astype(np.float32)
        utts.append((f"train-{i:06d}", x, [[0.1, 0.4], [0.5, 0.9]]))
    corpus = _write_corpus(tmp_path / "c", utts)
    out, tsv = _mix(corpus, noise_bank, tmp_path / "m", snrs=[20, 10, 0], fraction_noisy=0.5)
    noisy = tsv["target_snr"] != ""
    assert 0.4 < noisy.mean() < 0.6
    assert set(tsv["target_snr"][noisy].astype(float)) == {20.0, 10.0, 0.0}
    for i in np.flatnonzero(~noisy.to_numpy()):
        assert np.array_equal(np.asarray(out[i]), utts[i][1])
    for i in np.flatnonzero(noisy.to_numpy()):
        assert float(tsv["measured_snr"][i]) == pytest.approx(float(tsv["target_snr"][i]), abs=0.1)
    # fixed test conditions share the noise source and offset (paired across SNRs)
    _, a = _mix(corpus, noise_bank, tmp_path / "a", snrs=[10])
    _, b = _mix(corpus, noise_bank, tmp_path / "b", snrs=[-10])
    assert list(a["noise"]) == list(b["noise"]) and list(a["offset_s"]) == list(b["offset_s"])


def test_deterministic_and_order_independent(corpus, noise_bank, utterances, tmp_path):
    settings = dict(snrs=[10, 0, -10], fraction_noisy=0.7)
    out1, tsv1 = _mix(corpus, noise_bank, tmp_path / "one", **settings)
    out2, tsv2 = _mix(corpus, noise_bank, tmp_path / "two", **settings)
    assert np.array_equal(out1.data, out2.data) and tsv1.equals(tsv2)
    rev = _write_corpus(tmp_path / "rev", utterances[::-1])
    out3, tsv3 = _mix(rev, noise_bank, tmp_path / "three", **settings)
    n = len(utterances)
    for i in range(n):
        assert np.array_equal(np.asarray(out1[i]), np.asarray(out3[n - 1 - i]))
        assert tsv1.iloc[i].equals(tsv3.iloc[n - 1 - i])
    # another seed gives other draws
    out4, _ = _mix(corpus, noise_bank, tmp_path / "four", seed=99, **settings)
    assert not np.array_equal(out1.data, out4.data)


def test_noise_loops_when_shorter_than_utterance(tmp_path):
    prefix = tmp_path / "bank" / "noise"
    save_ragged(prefix, [np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 0.1])
    write_table(f"{prefix}.tsv", [{"name": "short", "category": "noise", "seconds": 1000 / SR}])
    x = (0.4 * np.sin(2 * np.pi * 200 * np.arange(3 * SR) / SR)).astype(np.float32)
    corpus = _write_corpus(tmp_path / "c", [("u1", x, [[0.0, 1.0], [1.5, 3.0]])])
    out, tsv = _mix(corpus, prefix, tmp_path / "m", placement="whole", snrs=[5])
    noise = (np.asarray(out[0], np.float64) / float(tsv["scale"][0]) - x) / float(tsv["gain"][0])
    off = int(round(float(tsv["offset_s"][0]) * SR))
    src = np.asarray(Ragged.load(prefix)[0], np.float64)
    np.testing.assert_allclose(noise, src[(np.arange(3 * SR) + off) % 1000], atol=2e-5)


def test_mix_errors(corpus, noise_bank, tmp_path):
    with pytest.raises(DmlmError, match="placement"):
        _mix(corpus, noise_bank, tmp_path / "x", placement="first_half")
    with pytest.raises(DmlmError, match="snrs"):
        _mix(corpus, noise_bank, tmp_path / "x", snrs=[])
    with pytest.raises(DmlmError, match="fraction_noisy"):
        _mix(corpus, noise_bank, tmp_path / "x", fraction_noisy=1.5)
    with pytest.raises(DmlmError, match="seed"):
        mix_split(corpus, noise_bank, tmp_path / "x", {"placement": "whole", "snrs": [0], "fraction_noisy": 1})
    with pytest.raises(DmlmError, match="manifest.tsv"):
        _mix(tmp_path / "nowhere", noise_bank, tmp_path / "x")
    with pytest.raises(DmlmError, match="no-bank"):
        _mix(corpus, tmp_path / "no-bank", tmp_path / "x")
    bad = tmp_path / "bad"
    _write_corpus(bad, [("u1", np.zeros(SR, np.float32), [[0.1, 0.5], [0.6, 0.9]])])
    with pytest.raises(DmlmError, match="u1.*silent"):
        _mix(bad, noise_bank, tmp_path / "x")
    table = read_table(bad / "manifest.tsv")
    table["segments"] = ["not json"]
    write_table(bad / "manifest.tsv", table)
    with pytest.raises(DmlmError, match="segments"):
        _mix(bad, noise_bank, tmp_path / "x")


def test_measured_snr_function():
    rng = np.random.default_rng(0)
    clean = rng.standard_normal(SR)
    noise = rng.standard_normal(SR)
    idx = slice(SR // 2, SR)
    mixed = clean.copy()
    mixed[idx] += noise[idx] * math.sqrt(np.mean(clean[idx] ** 2) / np.mean(noise[idx] ** 2)) * 10 ** (7 / 20)  # noise 7 dB above speech
    assert measured_snr(clean, mixed, [(0.5, 1.0)], SR) == pytest.approx(-7, abs=1e-9)
    assert measured_snr(clean, 0.5 * mixed, [(0.5, 1.0)], SR) == pytest.approx(-7, abs=1e-9)
    assert measured_snr(clean, 0.5 * mixed, [(0.5, 1.0)], SR, scale=0.5) == pytest.approx(-7, abs=1e-9)
    assert measured_snr(clean, clean, [(0.5, 1.0)], SR) == math.inf


# ----------------------------------------------------------------------------- CLI

def test_cli_handlers(corpus, noise_bank, tmp_path):
    from dmlm.noise import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["mix", "--corpus-dir", str(corpus), "--noise-prefix", str(noise_bank),
                              "--out-prefix", str(tmp_path / "cli" / "snr-10"), "--threads", "1", "--settings",
                              json.dumps({"placement": "second_half", "snrs": [-10], "fraction_noisy": 1.0, "seed": 1})])
    args.func(args)
    tsv = pd.read_csv(tmp_path / "cli" / "snr-10.snr.tsv", sep="\t")
    assert list(tsv.columns[:6]) == ["id", "noise", "offset_s", "target_snr", "measured_snr", "gain"]
    assert np.allclose(tsv["measured_snr"], -10, atol=0.1)

    root = tmp_path / "musan" / "noise"
    root.mkdir(parents=True)
    sf.write(root / "n.wav", 0.1 * np.random.default_rng(0).standard_normal(SR), SR)
    args = parser.parse_args(["noise-bank", "--out-prefix", str(tmp_path / "nb" / "noise"),
                              "--settings", json.dumps({"path": str(tmp_path / "musan")})])
    args.func(args)
    assert read_table(tmp_path / "nb" / "noise.tsv")["name"].tolist() == ["noise/n"]
