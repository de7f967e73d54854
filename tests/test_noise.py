"""Noise bank and SNR mixing: real espeak speech, real files, no mocks."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from dmlm.errors import DmlmError
from dmlm.noise import bank as B
from dmlm.noise import recordings, synth
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


@pytest.fixture(scope="module")
def noise_bank(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("noise") / "builtin" / "noise"
    settings = {"name": "builtin", "seconds_per_source": 3, "seed": 7}
    B.build_bank(settings, prefix)
    return prefix


def _mix(corpus, bank, out, **kw):
    settings = {"placement": "second_half", "snrs": [0], "fraction_noisy": 1.0, "seed": 1234}
    settings.update(kw)
    mix_split(corpus, bank, out, settings)
    return Ragged.load(out, mmap=False), read_table(f"{out}.snr.tsv")


# ----------------------------------------------------------------------------- the bank

def test_builtin_bank_tsv_and_arrays(noise_bank, tmp_path):
    table = read_table(f"{noise_bank}.tsv")
    bank = Ragged.load(noise_bank)
    assert list(table.columns) == ["name", "category", "seconds", "package", "origin", "start_s", "orig_sr", "licence"]
    assert len(table) == len(bank) >= 9
    assert set(table["category"]) == {"noise", "music", "speech"}
    assert {"white", "pink", "brown", "hum50", "hum60", "babble1", "midi1", "midi2"} <= set(table["name"])
    assert dict(zip(table["name"], table["category"]))["babble1"] == "speech"
    assert bank.data.dtype == np.float32
    synthesized = table["package"] == ""
    for i in range(len(bank)):
        x = np.asarray(bank[i], dtype=np.float64)
        assert len(x) / SR == pytest.approx(table["seconds"][i], abs=1e-4)
        if synthesized[i]:
            assert len(x) == 3 * SR
        else:
            assert SR // 4 <= len(x) <= 3 * SR  # catalogued files are >= 1.3 s before trimming silence
        assert np.sqrt(np.mean(x ** 2)) == pytest.approx(synth.TARGET_RMS, rel=0.05) or np.max(np.abs(x)) == pytest.approx(0.99, rel=1e-3)
        assert np.max(np.abs(x)) <= 0.99 + 1e-6
    # deterministic from the seed: recordings, MIDI renders and synthesized sources (babble is
    # covered by the fixture's own build)
    cheap = {"name": "builtin", "seconds_per_source": 1, "babble_sources": 0, "recordings_per_category": 3}
    a, b = B.builtin_sources({**cheap, "seed": 7}), B.builtin_sources({**cheap, "seed": 7})
    c = B.builtin_sources({**cheap, "seed": 8})
    assert [x[0] for x in a] == [x[0] for x in b]
    assert all(np.array_equal(x[2], y[2]) and x[3] == y[3] for x, y in zip(a, b))
    assert not np.array_equal(a[0][2], c[0][2])
    assert [x[0] for x in a] != [x[0] for x in c]  # another seed draws other recordings


def test_builtin_recordings_are_the_package_files(noise_bank):
    """Recorded sources come from the Debian packages' files, with origin, offset and licence."""
    table = read_table(f"{noise_bank}.tsv")
    bank = Ragged.load(noise_bank)
    rec = table[table["package"] != ""]
    assert set(rec["package"]) == {"sonic-pi-samples", "colobot-common-sounds"}
    assert set(rec["category"]) == {"noise", "music"}
    assert (rec.groupby("category").size() == 8).all()  # recordings_per_category default
    licences = {"sonic-pi-samples": "CC0-1.0", "colobot-common-sounds": "GPL-3+"}
    for i, row in rec.iterrows():
        assert row["licence"] == licences[row["package"]]
        info = sf.info(row["origin"])
        assert int(row["orig_sr"]) == info.samplerate and 0 <= float(row["start_s"]) < info.duration
        # the stored audio is the file's audio from start_s, resampled and scaled
        data, sr = sf.read(row["origin"], dtype="float64", always_2d=True)
        a = int(round(float(row["start_s"]) * sr))
        ref = synth.resample(data.mean(axis=1)[a:a + int(np.ceil(3 * sr))], sr, SR)
        x = np.asarray(bank[i], dtype=np.float64)
        ref = ref[: len(x)] - ref[: len(x)].mean()
        assert np.corrcoef(ref, x[: len(ref)])[0, 1] > 0.99, row["name"]
    licence = dict(zip(table["name"], table["licence"]))
    assert "MIT" in licence["midi1"] and "espeak" in licence["babble1"]


def test_builtin_missing_package_names_it(tmp_path, monkeypatch):
    settings = {"name": "builtin", "seconds_per_source": 1, "seed": 1, "babble_sources": 0}
    monkeypatch.setitem(recordings.PACKAGES, "colobot", ("colobot-common-sounds", tmp_path / "nowhere", "GPL-3+"))
    with pytest.raises(DmlmError, match="'colobot-common-sounds'.*not installed"):
        B.build_bank(settings, tmp_path / "out" / "a")
    assert not (tmp_path / "out" / "a.npy").exists()
    monkeypatch.undo()
    from dmlm.noise import midi

    monkeypatch.setattr(midi, "SOUNDFONT", tmp_path / "none.sf2")
    with pytest.raises(DmlmError, match="fluid-soundfont-gm"):
        B.build_bank(settings, tmp_path / "out" / "b")
    # the explicit synthesized-only bank needs no package
    B.build_bank({**settings, "recordings": False}, tmp_path / "out" / "c")
    table = read_table(tmp_path / "out" / "c.tsv")
    assert list(table["name"]) == ["white", "pink", "brown", "hum50", "hum60", "music1", "music2"]
    assert (table["package"] == "").all()
    with pytest.raises(DmlmError, match="recordings_per_category"):
        B.build_bank({**settings, "recordings_per_category": -1}, tmp_path / "out" / "d")


def test_midi_music_renders_deterministically():
    from dmlm.noise import midi

    piece, desc = midi.compose(4.0, np.random.default_rng(3))
    again, _ = midi.compose(4.0, np.random.default_rng(3))
    assert piece == again and piece[:4] == b"MThd" and b"MTrk" in piece
    x = midi.render(piece, SR)
    assert np.array_equal(x, midi.render(piece, SR))
    assert len(x) >= 4 * SR and np.sqrt(np.mean(x ** 2)) > 1e-3
    # tonal: most energy in a few spectral peaks, unlike noise
    spec = np.sort(np.abs(np.fft.rfft(x[: 4 * SR])) ** 2)[::-1]
    assert spec[: len(spec) // 100].sum() / spec.sum() > 0.5


def test_babble_is_speech_like(noise_bank):
    """Babble: several talkers summed, so it has speech-band energy and a fluctuating envelope."""
    table = read_table(f"{noise_bank}.tsv")
    x = np.asarray(Ragged.load(noise_bank)[int(np.flatnonzero(table["name"] == "babble1")[0])], dtype=np.float64)
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    assert spec[(f > 100) & (f < 4000)].sum() / spec.sum() > 0.8
    env = np.sqrt(np.mean(x[: len(x) // 400 * 400].reshape(-1, 400) ** 2, axis=1))  # 25 ms frames
    assert 0.1 < env.std() / env.mean() < 1.0  # not steady like white noise, not one lone talker


def _slope_db_per_octave(x, f_lo=50.0, f_hi=6000.0, nperseg=8192):
    x = np.asarray(x, dtype=np.float64)
    win = np.hanning(nperseg)
    segs = [x[i:i + nperseg] * win for i in range(0, len(x) - nperseg + 1, nperseg // 2)]
    psd = np.mean([np.abs(np.fft.rfft(s)) ** 2 for s in segs], axis=0)
    f = np.fft.rfftfreq(nperseg, 1 / SR)
    keep = (f >= f_lo) & (f <= f_hi)
    # average in 1/6-octave bands so the fit is not dominated by the many high-frequency bins
    edges = f_lo * 2 ** np.arange(0, np.log2(f_hi / f_lo) + 1e-9, 1 / 6)
    fc, pc = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        band = keep & (f >= lo) & (f < hi)
        if band.any():
            fc.append(np.sqrt(lo * hi))
            pc.append(psd[band].mean())
    return np.polyfit(np.log2(fc), 10 * np.log10(pc), 1)[0]


def test_coloured_noise_slopes(noise_bank):
    table = read_table(f"{noise_bank}.tsv")
    bank = Ragged.load(noise_bank)
    src = {n: bank[i] for i, n in enumerate(table["name"])}
    assert _slope_db_per_octave(src["white"], nperseg=4096) == pytest.approx(0.0, abs=0.5)
    assert _slope_db_per_octave(src["pink"], nperseg=4096) == pytest.approx(-3.01, abs=0.5)
    assert _slope_db_per_octave(src["brown"], nperseg=4096) == pytest.approx(-6.02, abs=0.5)
    long = synth.coloured_noise(2 ** 19, 1.0, np.random.default_rng(0))
    assert _slope_db_per_octave(long) == pytest.approx(-3.01, abs=0.2)
    long = synth.coloured_noise(2 ** 19, 2.0, np.random.default_rng(0))
    assert _slope_db_per_octave(long) == pytest.approx(-6.02, abs=0.2)


def test_hum_has_mains_harmonics():
    x = synth.hum(4 * SR, 50.0, np.random.default_rng(1))
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    harmonics = sum(spec[np.abs(f - k * 50) < 2].sum() for k in range(1, 40))
    assert harmonics / spec.sum() > 0.8


# ----------------------------------------------------------------------------- MUSAN folders

def test_musan_bank_reads_resamples_and_lists(tmp_path):
    root = tmp_path / "musan"
    (root / "noise" / "free-sound").mkdir(parents=True)
    (root / "music" / "jamendo").mkdir(parents=True)
    (root / "speech" / "librivox").mkdir(parents=True)
    t = np.arange(int(1.5 * 44100)) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 440 * t)], axis=1)
    sf.write(root / "noise" / "free-sound" / "noise-0001.wav", stereo, 44100)
    sf.write(root / "music" / "jamendo" / "music-0001.wav", 0.2 * np.sin(2 * np.pi * 220 * np.arange(SR) / SR), SR)
    sf.write(root / "speech" / "librivox" / "speech-0001.wav", 0.1 * np.random.default_rng(0).standard_normal(8000), 8000)
    (root / "README").write_text("not audio")
    prefix = tmp_path / "bank" / "noise"
    B.build_bank({"path": str(root), "seed": 1}, prefix)
    table = read_table(f"{prefix}.tsv")
    bank = Ragged.load(prefix)
    assert list(table["category"]) == ["noise", "music", "speech"]
    assert list(table["name"]) == ["noise/free-sound/noise-0001", "music/jamendo/music-0001", "speech/librivox/speech-0001"]
    assert list(bank.lengths()) == [int(1.5 * SR), SR, SR]
    assert table["seconds"][0] == pytest.approx(1.5)
    x = np.asarray(bank[0], dtype=np.float64)  # mono = mean of channels: 0.2 * sine at 440 Hz
    assert np.max(np.abs(x[SR // 4: -SR // 4])) == pytest.approx(0.2, abs=0.01)
    # seconds_per_source crops
    B.build_bank({"path": str(root), "seconds_per_source": 0.5}, prefix)
    assert list(Ragged.load(prefix).lengths()) == [SR // 2] * 3


def test_musan_folder_without_audio(tmp_path):
    empty = tmp_path / "empty"
    (empty / "noise").mkdir(parents=True)
    (empty / "noise" / "notes.txt").write_text("no audio here")
    (empty / "other").mkdir()
    sf.write(empty / "other" / "outside.wav", np.full(800, 0.1), SR)  # not under a category folder
    with pytest.raises(DmlmError, match=f"{empty}.*no audio files"):
        B.build_bank({"path": str(empty)}, tmp_path / "out" / "a")
    with pytest.raises(DmlmError, match="does not exist"):
        B.build_bank({"path": str(tmp_path / "missing")}, tmp_path / "out" / "a")
    assert not (tmp_path / "out" / "a.npy").exists()
    with pytest.raises(DmlmError, match="builtin"):
        B.build_bank({"name": "nonsense"}, tmp_path / "out" / "d")


def test_musan_corrupt_wav_names_the_file(tmp_path):
    root = tmp_path / "corrupt"
    (root / "music").mkdir(parents=True)
    sf.write(root / "music" / "fine.wav", np.full(800, 0.1), SR)
    bad = root / "music" / "broken.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage that is not a wave file")
    with pytest.raises(DmlmError, match="broken.wav"):
        B.build_bank({"path": str(root)}, tmp_path / "out" / "b")
    # a truncated file (valid header, data cut short) reads as fewer samples, not an error, but a
    # header cut inside the fmt chunk is corrupt
    sf.write(bad, np.full(SR, 0.1), SR)
    bad.write_bytes(bad.read_bytes()[:30])
    with pytest.raises(DmlmError, match="broken.wav"):
        B.build_bank({"path": str(root)}, tmp_path / "out" / "b")
    nan = root / "music" / "nan.wav"
    bad.unlink()
    sf.write(nan, np.array([0.1, np.nan, 0.2] * 100), SR, subtype="FLOAT")
    with pytest.raises(DmlmError, match="nan.wav.*NaN"):
        B.build_bank({"path": str(root)}, tmp_path / "out" / "b")
    assert not (tmp_path / "out" / "b.npy").exists()


def test_musan_empty_or_silent_wav_names_the_file(tmp_path):
    root = tmp_path / "emptywav"
    (root / "speech").mkdir(parents=True)
    sf.write(root / "speech" / "zero.wav", np.zeros(0), SR)
    with pytest.raises(DmlmError, match="zero.wav.*empty"):
        B.build_bank({"path": str(root)}, tmp_path / "out" / "c")
    sf.write(root / "speech" / "zero.wav", np.zeros(SR), SR)
    with pytest.raises(DmlmError, match="zero.wav.*silence"):
        B.build_bank({"path": str(root)}, tmp_path / "out" / "c")
    assert not (tmp_path / "out" / "c.npy").exists()


def test_musan_wrong_sample_rate_is_resampled_and_counted(tmp_path, capsys):
    """Documented choice: any rate >= 8 kHz is resampled to 16 kHz and counted (orig_sr column,
    CLI log line); below 8 kHz it is an error naming the file."""
    from dmlm.noise import cli

    root = tmp_path / "rates"
    (root / "noise").mkdir(parents=True)
    t = np.arange(int(0.5 * 48000)) / 48000
    sf.write(root / "noise" / "a48k.wav", 0.3 * np.sin(2 * np.pi * 1000 * t), 48000)
    sf.write(root / "noise" / "b16k.wav", np.full(SR // 2, 0.1) * np.sign(np.sin(np.arange(SR // 2))), SR)
    sf.write(root / "noise" / "c22k.flac", 0.1 * np.random.default_rng(0).standard_normal(11025), 22050)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    prefix = tmp_path / "bank" / "noise"
    args = parser.parse_args(["noise-bank", "--out-prefix", str(prefix), "--settings", json.dumps({"path": str(root)})])
    args.func(args)
    table = read_table(f"{prefix}.tsv")
    assert list(table["orig_sr"]) == [48000, 16000, 22050]
    assert list(Ragged.load(prefix).lengths()) == [SR // 2] * 3
    x = np.asarray(Ragged.load(prefix)[0], np.float64)[1000:-1000]  # the 1 kHz tone survives resampling
    f = np.fft.rfftfreq(len(x), 1 / SR)
    assert f[np.argmax(np.abs(np.fft.rfft(x)))] == pytest.approx(1000, abs=5)
    assert "2 files resampled to 16000 Hz (1 at 22050 Hz, 1 at 48000 Hz)" in capsys.readouterr().err
    sf.write(root / "noise" / "d4k.wav", 0.1 * np.random.default_rng(0).standard_normal(4000), 4000)
    with pytest.raises(DmlmError, match="d4k.wav.*4000 Hz"):
        B.build_bank({"path": str(root)}, prefix)


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
