"""The noise bank: the built-in one (synthesized sources, Debian recordings, MIDI, babble) and MUSAN
folders (bad files named). Real files, no mocks."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import soundfile as sf

from dmlm.errors import DmlmError
from dmlm.noise import bank as B
from dmlm.noise import recordings, synth
from dmlm.storage import Ragged, read_table

SR = 16000


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
