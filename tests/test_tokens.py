"""Tokens stage on real data: espeak-ng speech, drawn mouth frames, rendered text images."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest

from dmlm.errors import DmlmError
from dmlm.storage import Ragged, save_ragged, write_table
from dmlm.tokens.registry import encode_media, fit_codebook
from dmlm.tokens.codebook import Codebook, collapse_repeats

SR = 16000
SENTENCES = [
    "three x plus five equals twelve",
    "seven minus y equals two",
    "nine times four equals thirty six",
    "the quick brown fox jumps over the lazy dog",
    "eight divided by two equals four",
    "one plus one equals two",
]


def _speak(text: str, wav_path) -> np.ndarray:
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav_path), text], check=True, capture_output=True)
    wave, rate = sf.read(str(wav_path), dtype="float32")
    return AF.resample(torch.from_numpy(wave), rate, SR).numpy().astype(np.float32)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Ragged 16 kHz speech: the sentences, then the first sentence synthesised a second time."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    root = tmp_path_factory.mktemp("speech")
    texts = SENTENCES + [SENTENCES[0]]
    waves = [_speak(t, root / f"{i}.wav") for i, t in enumerate(texts)]
    save_ragged(root / "audio", waves, dtype=np.float32)
    return root / "audio", waves


def audio_settings(**kw):
    s = {
        "encoder": "mfcc_kmeans",
        "n_units": 16,
        "fit_utterances": 5,
        "frame_stack": 1,
        "collapse_repeats": False,
        "seed": 1234,
        "sample_rate": SR,
    }
    s.update(kw)
    return s


def test_collapse_repeats():
    ids = np.array([3, 3, 5, 3, 3, 3, 7, 7], dtype=np.int32)
    assert collapse_repeats(ids).tolist() == [3, 5, 3, 7]
    assert collapse_repeats(np.zeros(0, np.int32)).tolist() == []


def test_audio_determinism_and_frame_rate(speech, tmp_path):
    prefix, waves = speech
    cb1 = fit_codebook("audio", audio_settings(), prefix, tmp_path / "a1.npz")
    cb2 = fit_codebook("audio", audio_settings(), prefix, tmp_path / "a2.npz")
    assert np.array_equal(cb1.centroids, cb2.centroids)
    assert cb1.centroids.shape == (16, 39)
    ids1 = encode_media("audio", tmp_path / "a1.npz", prefix, tmp_path / "t1")
    ids2 = encode_media("audio", tmp_path / "a2.npz", prefix, tmp_path / "t2")
    assert all(np.array_equal(a, b) for a, b in zip(ids1, ids2))

    # saved and reloaded: same ids, int32 ragged, one id per 10 ms frame (centred frames)
    on_disk = Ragged.load(tmp_path / "t1")
    assert on_disk.data.dtype == np.int32 and len(on_disk) == len(waves)
    for wave, ids in zip(waves, on_disk):
        assert len(ids) == 1 + len(wave) // 160
        assert ids.min() >= 0 and ids.max() < 16
    seconds = len(waves[0]) / SR
    assert abs(len(on_disk[0]) / seconds - 100) < 2

    # same voice, same sentence -> same ids; different sentences -> different ids
    assert np.array_equal(on_disk[0], on_disk[len(SENTENCES)])
    for i in range(1, len(SENTENCES)):
        assert not np.array_equal(on_disk[0], on_disk[i])
    # the units are used: speech visits many of them
    assert len(np.unique(on_disk.data)) >= 8

    # frame_stack=2 halves the rate; collapse removes every consecutive repeat
    fit_codebook("audio", audio_settings(frame_stack=2), prefix, tmp_path / "s2.npz")
    stacked = encode_media("audio", tmp_path / "s2.npz", prefix, tmp_path / "s2")
    for wave, ids in zip(waves, stacked):
        assert len(ids) == math.ceil((1 + len(wave) // 160) / 2)
    fit_codebook("audio", audio_settings(frame_stack=2, collapse_repeats=True), prefix, tmp_path / "c2.npz")
    collapsed = encode_media("audio", tmp_path / "c2.npz", prefix, tmp_path / "c2")
    times = Ragged.load(tmp_path / "c2.times")  # each kept unit's start: first frame / 50 Hz
    for full, short, t in zip(stacked, collapsed, times):
        assert np.all(short[1:] != short[:-1])
        assert np.array_equal(short, collapse_repeats(full))
        assert len(short) < len(full)
        first = [j for j in range(len(full)) if j == 0 or full[j] != full[j - 1]]
        assert t.dtype == np.float64 and t.tolist() == [j / 50 for j in first]


def test_logmel_units(speech, tmp_path):
    """logmel_kmeans: 40 log mel energies per 10 ms frame, same frame count as MFCC, deterministic."""
    prefix, waves = speech
    settings = audio_settings(encoder="logmel_kmeans", frame_stack=2)
    cb = fit_codebook("audio", settings, prefix, tmp_path / "m1.npz")
    assert cb.centroids.shape == (16, 80)
    again = fit_codebook("audio", settings, prefix, tmp_path / "m2.npz")
    assert np.array_equal(cb.centroids, again.centroids)
    ids = encode_media("audio", tmp_path / "m1.npz", prefix, tmp_path / "m1")
    for wave, units in zip(waves, ids):
        assert len(units) == math.ceil((1 + len(wave) // 160) / 2)
    assert np.array_equal(ids[0], ids[len(SENTENCES)])  # same sentence, same voice
    assert not np.array_equal(ids[0], ids[1])


def test_codebook_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(c, 0.1, size=(200, 4)) for c in (0.0, 5.0, 10.0)]).astype(np.float32)
    settings = {"n_units": 3, "seed": 7, "encoder": "x"}
    cb = Codebook.fit(feats, settings, "audio")
    cb.save(tmp_path / "cb.npz")
    back = Codebook.load(tmp_path / "cb.npz")
    assert back.centroids.dtype == np.float32
    assert np.array_equal(back.centroids, cb.centroids)
    assert back.settings == {**settings, "modality": "audio"}
    ids = back.encode(feats)
    assert ids.dtype == np.int32
    # the three blobs get three different ids, each blob one id
    blob_ids = [set(ids[i * 200 : (i + 1) * 200].tolist()) for i in range(3)]
    assert all(len(b) == 1 for b in blob_ids) and len(set.union(*blob_ids)) == 3
    assert not list(tmp_path.glob(".*tmp"))  # no leftover temporary file


def _mouth_frames(rng, n: int, open_mouth: bool) -> np.ndarray:
    from PIL import Image, ImageDraw

    frames = []
    for _ in range(n):
        img = Image.new("L", (88, 88), 170)
        d = ImageDraw.Draw(img)
        half_w = 28 + rng.integers(-3, 4)
        half_h = (18 if open_mouth else 3) + rng.integers(-2, 3)
        cx, cy = 44 + rng.integers(-2, 3), 44 + rng.integers(-2, 3)
        d.ellipse([cx - half_w, cy - half_h, cx + half_w, cy + half_h], fill=40, outline=90)
        frame = np.asarray(img, dtype=np.int16) + rng.integers(-8, 9, size=(88, 88))
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(frames)


def test_lips_open_and_closed_get_different_units(tmp_path):
    rng = np.random.default_rng(3)
    # utterances alternate closed / open stretches
    items = []
    labels = []
    for u in range(6):
        parts, lab = [], []
        for j, open_mouth in enumerate([False, True, False, True]):
            n = 5 + u + j
            parts.append(_mouth_frames(rng, n, open_mouth))
            lab += [open_mouth] * n
        items.append(np.concatenate(parts))
        labels.append(np.array(lab))
    save_ragged(tmp_path / "lips", items, dtype=np.uint8)
    settings = {"encoder": "pixel_kmeans", "n_units": 4, "fit_frames": 120, "downsample": 22,
                "collapse_repeats": False, "seed": 1234}
    cb = fit_codebook("lips", settings, tmp_path / "lips", tmp_path / "lips.npz")
    assert cb.centroids.shape == (4, 22 * 22)
    ids = encode_media("lips", tmp_path / "lips.npz", tmp_path / "lips", tmp_path / "lip_tokens")
    all_ids, all_labels = np.concatenate(ids), np.concatenate(labels)
    assert [len(x) for x in ids] == [len(x) for x in items]  # one unit per frame (25 Hz)
    open_units, closed_units = set(all_ids[all_labels]), set(all_ids[~all_labels])
    assert open_units and closed_units and not open_units & closed_units

    collapsed = encode_media("lips", _with_setting(tmp_path / "lips.npz", collapse_repeats=True),
                             tmp_path / "lips", tmp_path / "lip_c")
    for full, short, t in zip(ids, collapsed, Ragged.load(tmp_path / "lip_c.times")):
        assert np.array_equal(short, collapse_repeats(full))
        first = [j for j in range(len(full)) if j == 0 or full[j] != full[j - 1]]
        assert t.tolist() == [j / 25 for j in first]  # 25 fps
    assert Ragged.load(tmp_path / "lip_tokens.times")[0].tolist() == [j / 25 for j in range(len(items[0]))]


def test_lips_frame_stack(tmp_path):
    """frame_stack k: one unit per k frames of an utterance (never across utterances), each the
    nearest centroid to the k frames' features side by side, at 25 / k Hz."""
    from dmlm.tokens.lips import frame_features

    rng = np.random.default_rng(5)
    items = [np.concatenate([_mouth_frames(rng, 4 + u, False), _mouth_frames(rng, 3 + 2 * u, True)]) for u in range(5)]
    save_ragged(tmp_path / "lips", items, dtype=np.uint8)
    settings = {"encoder": "pixel_kmeans", "n_units": 6, "fit_frames": 1000, "downsample": 11,
                "collapse_repeats": False, "frame_stack": 3, "seed": 7}
    cb = fit_codebook("lips", settings, tmp_path / "lips", tmp_path / "lips.npz")
    assert cb.centroids.shape == (6, 3 * 11 * 11)
    ids = encode_media("lips", tmp_path / "lips.npz", tmp_path / "lips", tmp_path / "lip_tokens")
    assert [len(x) for x in ids] == [math.ceil(len(x) / 3) for x in items]
    for frames, units in zip(items, ids):
        feats = frame_features(frames, 11)
        feats = np.concatenate([feats, np.repeat(feats[-1:], (-len(feats)) % 3, axis=0)]).reshape(-1, 3 * 11 * 11)
        nearest = ((feats[:, None, :] - cb.centroids[None]) ** 2).sum(-1).argmin(1)
        assert units.tolist() == nearest.tolist()
    assert Ragged.load(tmp_path / "lip_tokens.times")[1].tolist() == [3 * j / 25 for j in range(len(ids[1]))]
    # closed and open mouths still get different units
    assert ids[4][0] != ids[4][-1]


def _with_setting(path, **kw):
    cb = Codebook.load(path)
    cb.settings.update(kw)
    out = path.with_name(path.stem + "_mod.npz")
    cb.save(out)
    return out


def _text_images(n: int, h: int = 200, w: int = 450) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=28)
    imgs = []
    for i in range(n):
        img = Image.new("L", (w, h), 255)
        d = ImageDraw.Draw(img)
        d.text((20, 20), f"{i + 3}x+5={i + 12}", fill=0, font=font)
        d.text((20, 80), f"y-{i}={2 * i + 1}", fill=0, font=font)
        imgs.append(np.asarray(img, dtype=np.uint8))
    return np.stack(imgs)


def test_image_patch_codebook(tmp_path):
    images = _text_images(6)
    np.save(tmp_path / "images.npy", images)
    p = 25
    settings = {"encoder": "patch_kmeans", "n_units": 8, "fit_images": 4, "patch": p, "seed": 1234}
    fit_codebook("image", settings, tmp_path / "images.npy", tmp_path / "img.npz")
    ids = encode_media("image", tmp_path / "img.npz", tmp_path / "images.npy", tmp_path / "img_tokens")
    nh, nw = 200 // p, 450 // p
    assert all(len(x) == nh * nw for x in ids)
    on_disk = Ragged.load(tmp_path / "img_tokens")
    assert on_disk.data.dtype == np.int32 and len(on_disk) == 6
    for img, tok in zip(images, on_disk):
        grid = tok.reshape(nh, nw)  # raster order: row by row
        patches = img[: nh * p, : nw * p].reshape(nh, p, nw, p).transpose(0, 2, 1, 3)
        blank = (patches == 255).all(axis=(2, 3))
        assert blank.any() and (~blank).any()
        blank_ids = set(grid[blank].tolist())
        assert len(blank_ids) == 1  # every blank patch is the same unit
        assert set(grid[~blank].tolist()) - blank_ids  # text patches use other units
    # an odd-sized image is cropped to whole patches
    np.save(tmp_path / "odd.npy", images[:2, :199, :449])
    odd = encode_media("image", tmp_path / "img.npz", tmp_path / "odd.npy", tmp_path / "odd_tokens")
    assert all(len(x) == (199 // p) * (449 // p) for x in odd)



def test_bad_inputs_name_the_file(tmp_path, speech):
    missing = tmp_path / "nowhere" / "audio"
    with pytest.raises(DmlmError, match="nowhere"):
        fit_codebook("audio", audio_settings(), missing, tmp_path / "x.npz")
    with pytest.raises(DmlmError, match="missing.npy"):
        fit_codebook("image", {"encoder": "patch_kmeans", "n_units": 2, "fit_images": 1, "patch": 4, "seed": 0},
                     tmp_path / "missing.npy", tmp_path / "x.npz")
    with pytest.raises(DmlmError, match="nocodebook.npz"):
        encode_media("audio", tmp_path / "nocodebook.npz", speech[0], tmp_path / "x")
    with pytest.raises(DmlmError, match="tokens.audio.encoder"):
        fit_codebook("audio", audio_settings(encoder="wav2vec"), speech[0], tmp_path / "x.npz")
    # wrong dtype: uint8 "audio"
    save_ragged(tmp_path / "bytes", [np.zeros(100, np.uint8)])
    with pytest.raises(DmlmError, match="bytes.npy"):
        fit_codebook("audio", audio_settings(), tmp_path / "bytes", tmp_path / "x.npz")
    # wrong shape: 2-D images
    np.save(tmp_path / "flat.npy", np.zeros((4, 4), np.uint8))
    with pytest.raises(DmlmError, match="flat.npy"):
        fit_codebook("image", {"encoder": "patch_kmeans", "n_units": 2, "fit_images": 1, "patch": 2, "seed": 0},
                     tmp_path / "flat.npy", tmp_path / "x.npz")
    # empty ragged array
    save_ragged(tmp_path / "empty", [], dtype=np.uint8)
    with pytest.raises(DmlmError, match="empty.npy"):
        fit_codebook("lips", {"encoder": "pixel_kmeans", "n_units": 2, "fit_frames": 1, "downsample": 22, "seed": 0},
                     tmp_path / "empty", tmp_path / "x.npz")
    from dmlm.tokens.text import encode_table

    with pytest.raises(DmlmError, match="tok.json"):
        encode_table(tmp_path / "tok.json", tmp_path / "t.tsv", "ocr", tmp_path / "o")
    assert not (tmp_path / "x.npz").exists()


def test_cli_fit_and_encode(speech, tmp_path, monkeypatch, capsys):
    import json

    import dmlm.cli

    # only this stage's subcommands: the test must not depend on the other stages' CLIs
    monkeypatch.setattr(dmlm.cli, "STAGE_CLIS", ("dmlm.tokens.cli",))
    prefix, waves = speech
    settings = json.dumps(audio_settings(frame_stack=2, collapse_repeats=True))
    rc = dmlm.cli.main(["fit-codebook", "--modality", "audio", "--media", str(prefix),
                        "--out", str(tmp_path / "cb.npz"), "--settings", settings, "--threads", "1"])
    assert rc == 0
    rc = dmlm.cli.main(["encode", "--modality", "audio", "--codebook", str(tmp_path / "cb.npz"),
                        "--media", str(prefix), "--out-prefix", str(tmp_path / "tok"), "--threads", "1"])
    assert rc == 0
    tokens = Ragged.load(tmp_path / "tok")
    assert len(tokens) == len(waves) and tokens.data.dtype == np.int32
    assert all(np.all(t[1:] != t[:-1]) for t in tokens)
    # a wrong modality / missing file is a clean exit 2 naming the file
    rc = dmlm.cli.main(["encode", "--modality", "lips", "--codebook", str(tmp_path / "cb.npz"),
                        "--media", str(prefix), "--out-prefix", str(tmp_path / "tok2")])
    assert rc == 2 and "cb.npz" in capsys.readouterr().err
    rc = dmlm.cli.main(["fit-codebook", "--modality", "audio", "--media", str(tmp_path / "none"),
                        "--out", str(tmp_path / "cb2.npz"), "--settings", settings])
    assert rc == 2 and str(tmp_path / "none") in capsys.readouterr().err


def test_registry_and_describe(tmp_path, monkeypatch, capsys):
    import json

    import dmlm.cli
    from dmlm.tokens.registry import ENCODERS, describe
    from dmlm.tokens.text import train_text_tokenizer

    assert ENCODERS["audio"] == {"mfcc_kmeans": "dmlm.tokens.audio", "logmel_kmeans": "dmlm.tokens.audio",
                                 "whisper_kmeans": "dmlm.tokens.whisper"}
    assert ENCODERS["image"]["craft_kmeans"] == "dmlm.tokens.craft"
    assert ENCODERS["image"]["raster"] == "dmlm.tokens.raster"
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(64, 78)).astype(np.float32)
    cb = Codebook.fit(feats, {"encoder": "mfcc_kmeans", "n_units": 5, "seed": 1, "sample_rate": SR,
                              "frame_stack": 2}, "audio")
    cb.save(tmp_path / "cb.npz")
    info = describe(tmp_path / "cb.npz")
    assert info == {"vocab_size": 5, "frame_rate": 50.0, "modality": "audio", "encoder": "mfcc_kmeans"}
    from dmlm.model.cli import codebook_sizes  # training reads the size without the registry

    assert codebook_sizes([f"audio={tmp_path / 'cb.npz'}"]) == {"audio": info["vocab_size"]}

    write_table(tmp_path / "manifest.tsv", [{"id": "train-000000", "transcript": "3 x plus 5 equals 12"}])
    train_text_tokenizer(tmp_path / "manifest.tsv", None, tmp_path / "tok.json", {"min_frequency": 1})
    assert describe(tmp_path / "tok.json") == {"vocab_size": 7, "frame_rate": None, "modality": "text",
                                               "encoder": "wordlevel"}  # 6 words + [UNK]

    monkeypatch.setattr(dmlm.cli, "STAGE_CLIS", ("dmlm.tokens.cli",))
    assert dmlm.cli.main(["describe-tokens", str(tmp_path / "cb.npz")]) == 0
    assert json.loads(capsys.readouterr().out) == info

    bad = Codebook(cb.centroids, {**cb.settings, "encoder": "wav2vec"})
    bad.save(tmp_path / "bad.npz")
    with pytest.raises(DmlmError, match="tokens.audio.encoder"):
        describe(tmp_path / "bad.npz")
    with pytest.raises(DmlmError, match="nothing.npz"):
        describe(tmp_path / "nothing.npz")
