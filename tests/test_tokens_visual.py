"""Visual tokenizers on real data: CRAFT features + k-means, the raster oracle, lip units.

One small corpus (two splits, different speakers) is generated once per module; every test reads
it. The probes check that units carry content, not only that they are deterministic.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dmlm.errors import DmlmError
from dmlm.storage import Ragged, read_table, save_ragged, write_table
from dmlm.tokens import craft, image, lips, raster, visemes
from dmlm.tokens.codebook import Codebook

from conftest import VISUAL_TEST as N_TEST, split_visemes  # noqa: E402
PATCH = 25


@pytest.fixture(scope="module")
def corpus(visual_corpus):
    return visual_corpus


def craft_settings(**kw):
    s = {"encoder": "craft_kmeans", "n_units": 16, "fit_images": 6, "patch": PATCH, "seed": 1234, "batch_size": 4}
    s.update(kw)
    return s


# ------------------------------------------------------------------------------------ craft
def test_craft_deterministic_and_token_counts(corpus, tmp_path):
    media = corpus / "test" / "images.npy"
    cb1 = craft.fit(craft_settings(), corpus / "train" / "images.npy")
    cb2 = craft.fit(craft_settings(), corpus / "train" / "images.npy")
    assert np.array_equal(cb1.centroids, cb2.centroids)
    assert cb1.centroids.shape == (16, craft.LAYERS[craft.DEFAULT_LAYER][1])
    assert cb1.settings["layer"] == craft.DEFAULT_LAYER and cb1.settings["modality"] == "image"
    cb1.save(tmp_path / "craft.npz")
    loaded = Codebook.load(tmp_path / "craft.npz")
    ids1 = craft.encode(loaded, media)
    ids2 = craft.encode(cb2, media)
    per_image = (200 // PATCH) * (450 // PATCH)
    assert len(ids1) == N_TEST
    for a, b in zip(ids1, ids2):
        assert a.dtype == np.int32 and a.shape == (per_image,)
        assert np.array_equal(a, b)
    # text cells and background cells do not all share one unit
    assert len(np.unique(np.concatenate(ids1))) > 2
    assert craft.describe(loaded) == {"vocab_size": 16, "frame_rate": None}


def test_craft_through_the_registry(corpus, tmp_path):
    from dmlm.tokens.registry import ENCODERS, encode_media, fit_codebook

    if "craft_kmeans" not in ENCODERS["image"]:
        pytest.skip("craft_kmeans not registered in dmlm.tokens.registry.ENCODERS yet")
    fit_codebook("image", craft_settings(fit_images=3), corpus / "train" / "images.npy", tmp_path / "c.npz")
    ids = encode_media("image", tmp_path / "c.npz", corpus / "test" / "images.npy", tmp_path / "t")
    assert np.array_equal(Ragged.load(tmp_path / "t").data, np.concatenate(ids))


def digit_grid_images(n: int, rows: int = 4, cols: int = 8, seed: int = 0):
    """Images of random digits, one per PATCH x PATCH cell (random size 16-22 px, jittered by up
    to 3 px), and the digit of every cell in raster order."""
    from PIL import Image, ImageDraw, ImageFont

    from dmlm.corpus.image import font_path

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        img = Image.new("L", (cols * PATCH, rows * PATCH), 255)
        draw = ImageDraw.Draw(img)
        lab = rng.integers(0, 10, (rows, cols))
        for r in range(rows):
            for c in range(cols):
                font = ImageFont.truetype(font_path(), int(rng.integers(16, 23)))
                x = c * PATCH + PATCH / 2 + int(rng.integers(-3, 4))
                y = r * PATCH + PATCH / 2 + int(rng.integers(-3, 4))
                draw.text((x, y), str(lab[r, c]), font=font, fill=0, anchor="mm")
        images.append(np.asarray(img, dtype=np.uint8))
        labels.append(lab.ravel())
    return np.stack(images), np.stack(labels)


def purity(units: np.ndarray, labels: np.ndarray) -> float:
    """Sum over units of the count of the unit's most frequent label, over all items."""
    table = np.zeros((units.max() + 1, labels.max() + 1))
    np.add.at(table, (units, labels), 1)
    return float(table.max(1).sum() / len(units))


def test_craft_units_carry_more_character_content_than_pixel_patches(tmp_path):
    """The digit probe: k-means units over CRAFT features predict which digit a patch shows far
    better than units over the raw patch pixels (same patches, same number of units; fitted on
    some images, scored on others)."""
    from sklearn.metrics import normalized_mutual_info_score

    images, labels = digit_grid_images(40)
    np.save(tmp_path / "fit.npy", images[:28])
    np.save(tmp_path / "probe.npy", images[28:])
    truth = labels[28:].ravel()
    common = {"n_units": 32, "fit_images": 28, "patch": PATCH, "seed": 1234}
    raw_cb = image.fit({**common, "encoder": "patch_kmeans"}, tmp_path / "fit.npy")
    raw = np.concatenate(image.encode(raw_cb, tmp_path / "probe.npy"))
    craft_cb = craft.fit({**common, "encoder": "craft_kmeans"}, tmp_path / "fit.npy")
    deep = np.concatenate(craft.encode(craft_cb, tmp_path / "probe.npy"))
    p_raw, p_craft = purity(raw, truth), purity(deep, truth)
    nmi_raw = normalized_mutual_info_score(truth, raw)
    nmi_craft = normalized_mutual_info_score(truth, deep)
    print(f"digit probe: purity raw {p_raw:.3f} craft {p_craft:.3f}; NMI raw {nmi_raw:.3f} craft {nmi_craft:.3f}")
    assert p_craft >= p_raw + 0.1
    assert nmi_craft >= nmi_raw + 0.1


def test_craft_weights_missing_or_malformed(corpus, tmp_path):
    import torch

    media = corpus / "train" / "images.npy"
    missing = tmp_path / "nowhere" / "craft_mlt_25k.pth"
    with pytest.raises(DmlmError, match=r"tokens\.image\.weights") as err:
        craft.fit(craft_settings(weights=str(missing)), media)
    assert str(missing) in str(err.value) and "craft_mlt_25k.pth" in str(err.value)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DmlmError, match=r"tokens\.image\.weights") as err:
        craft.fit(craft_settings(weights=str(garbage)), media)
    assert str(garbage) in str(err.value) and "state dict" in str(err.value)

    wrong = tmp_path / "wrong.pth"
    torch.save({"module.basenet.slice1.0.weight": torch.zeros(3)}, wrong)
    with pytest.raises(DmlmError, match=r"tokens\.image\.weights") as err:
        craft.fit(craft_settings(weights=str(wrong)), media)
    assert str(wrong) in str(err.value) and "backbone tensors" in str(err.value)

    with pytest.raises(DmlmError, match=r"tokens\.image\.layer"):
        craft.fit(craft_settings(layer="conv9"), media)

    # the same checks before any job runs, without images
    craft.check_settings(craft_settings())
    for bad in (missing, garbage, wrong):
        with pytest.raises(DmlmError, match=r"tokens\.image\.weights") as err:
            craft.check_settings(craft_settings(weights=str(bad)))
        assert str(bad) in str(err.value)


def test_craft_explicit_weights_path_gives_the_default_features(corpus):
    images = np.load(corpus / "test" / "images.npy")[:2]
    default = craft.CraftFeatures({"patch": PATCH, "layer": "relu2_2"})(images)
    explicit = craft.CraftFeatures({"patch": PATCH, "layer": "relu2_2", "weights": str(craft.default_weights())})(images)
    assert default.shape == (2, 144, 128)
    assert np.array_equal(default, explicit)
    assert np.allclose(np.linalg.norm(default, axis=2), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------------- raster
def test_manifest_boxes_hold_the_equations_ink(corpus):
    manifest = read_table(corpus / "test" / "manifest.tsv")
    images = np.load(corpus / "test" / "images.npy")
    assert list(manifest.columns)[-1] == "boxes"
    for img, cell in zip(images, manifest["boxes"]):
        boxes = json.loads(cell)
        assert len(boxes) == 3
        ink = img < 128
        inside = np.zeros_like(ink)
        for x0, y0, x1, y1 in boxes:
            assert img[y0:y1, x0:x1].min() < 64
            inside[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = True
        assert not (ink & ~inside).any()


def test_raster_oracle_round_trip_and_determinism(corpus, tmp_path):
    settings = {"encoder": "raster", "char_width": 12}
    cb = raster.fit(settings, corpus / "train" / "images.npy")
    cb.save(tmp_path / "raster.npz")
    loaded = Codebook.load(tmp_path / "raster.npz")
    assert raster.describe(loaded) == {"vocab_size": len(raster.VOCAB), "frame_rate": None}
    media = corpus / "test" / "images.npy"
    ids = raster.encode(loaded, media)
    assert all(np.array_equal(a, b) for a, b in zip(ids, raster.encode(cb, media)))
    manifest = read_table(corpus / "test" / "manifest.tsv")
    columns = -(-450 // 12)
    for seq, eq_cell, box_cell in zip(ids, manifest["equations"], manifest["boxes"]):
        equations, boxes = json.loads(eq_cell), json.loads(box_cell)
        assert seq.dtype == np.int32 and len(seq) == 3 * (columns + 1)
        assert 0 <= seq.min() and seq.max() < len(raster.VOCAB)
        rows = seq.reshape(3, columns + 1)
        assert (rows[:, -1] == raster.ROW_ID).all() and (rows[:, :-1] != raster.ROW_ID).all()
        # reading order: top to bottom
        order = sorted(range(3), key=lambda k: boxes[k][1])
        assert raster.decode(seq) == [equations[k] for k in order]
        # columns: each line starts at its left ink edge, quantised to a character width
        for row, k in zip(rows, order):
            first = int(np.flatnonzero(row[:-1] != raster.BLANK_ID)[0])
            assert first == min(round(boxes[k][0] / 12), columns - len(equations[k]))


def test_raster_needs_the_boxes(corpus, tmp_path):
    manifest = read_table(corpus / "test" / "manifest.tsv").drop(columns=["boxes"])
    (tmp_path / "old").mkdir()
    manifest.to_csv(tmp_path / "old" / "manifest.tsv", sep="\t", index=False)
    np.save(tmp_path / "old" / "images.npy", np.load(corpus / "test" / "images.npy"))
    with pytest.raises(DmlmError, match="boxes"):
        raster.fit({"encoder": "raster"}, tmp_path / "old" / "images.npy")
    with pytest.raises(DmlmError, match=r"tokens\.image\.char_width"):
        raster.fit({"encoder": "raster", "char_width": 40}, corpus / "test" / "images.npy")


# ------------------------------------------------------------------------------------- lips
@pytest.mark.parametrize("features,extra", [("pixels", {"downsample": 22}), ("dct", {"dct_size": 8})])
def test_lip_units_carry_visemes_on_held_out_speakers(corpus, features, extra):
    train = read_table(corpus / "train" / "manifest.tsv")
    test = read_table(corpus / "test" / "manifest.tsv")
    assert not set(train["speaker"]) & set(test["speaker"])  # held out of the k-means fit
    settings = {"encoder": "pixel_kmeans", "n_units": 32, "fit_frames": 50000, "seed": 1234,
                "features": features, **extra}
    cb = lips.fit(settings, corpus / "train" / "lips")
    ids = lips.encode(cb, corpus / "test" / "lips")
    assert all(np.array_equal(a, b) for a, b in zip(ids, lips.encode(cb, corpus / "test" / "lips")))
    units = np.concatenate(ids)
    visemes = split_visemes(corpus / "test")
    assert len(units) == len(visemes)
    majority = np.bincount(visemes).max() / len(visemes)
    score = purity(units, visemes)
    print(f"lips {features}: viseme purity {score:.3f} vs majority {majority:.3f} ({len(units)} frames)")
    assert score >= majority + 0.1
    assert lips.describe(cb) == {"vocab_size": 32, "frame_rate": 25.0}


def test_viseme_oracle_reads_the_renderer_phonemes(tmp_path):
    """Frame centres at 25 fps: 0.02 0.06 | 0.10 0.14 0.18 | 0.22 s -> p p a a a (silence)."""
    from dmlm.tokens.registry import describe, encode_media, fit_codebook

    split = tmp_path / "test"
    split.mkdir()
    write_table(split / "manifest.tsv", [{"id": "u0", "phonemes": json.dumps([[0.0, 0.1, "p"], [0.1, 0.2, "a"]])}])
    save_ragged(split / "lips", [np.zeros((6, 88, 88), np.uint8)])
    settings = {"encoder": "viseme_oracle", "collapse_repeats": False, "seed": 0}
    cb = visemes.fit(settings, split / "lips")
    assert [a.tolist() for a in visemes.encode(cb, split / "lips")] == [[1, 1, 10, 10, 10, 0]]
    stacked = visemes.fit({**settings, "frame_stack": 2}, split / "lips")
    assert [a.tolist() for a in visemes.encode(stacked, split / "lips")] == [[1, 10, 0]]  # tie 10/0 -> 0
    # through the registry: collapsed units and their times (first frame / 25 Hz)
    fit_codebook("lips", {**settings, "collapse_repeats": True}, split / "lips", tmp_path / "cb.npz")
    ids = encode_media("lips", tmp_path / "cb.npz", split / "lips", tmp_path / "tok")
    assert [a.tolist() for a in ids] == [[1, 10, 0]]
    assert np.allclose(Ragged.load(tmp_path / "tok.times")[0], [0.0, 0.08, 0.2])
    assert describe(tmp_path / "cb.npz")["vocab_size"] == 15 and describe(tmp_path / "cb.npz")["frame_rate"] == 25.0
    write_table(split / "manifest.tsv", [{"id": "u0", "phonemes": "[[0.0, 0.1]]"}])
    with pytest.raises(DmlmError, match=r"manifest\.tsv: row 1: expected \[start_s, end_s, phoneme\]"):
        visemes.fit(settings, split / "lips")


def test_viseme_oracle_on_the_corpus(corpus):
    """One unit per frame of each video, 15 visemes, silence where no phoneme sounds."""
    frames = Ragged.load(corpus / "test" / "lips")
    cb = visemes.fit({"encoder": "viseme_oracle", "collapse_repeats": False}, corpus / "test" / "lips")
    units = visemes.encode(cb, corpus / "test" / "lips")
    assert [len(u) for u in units] == np.diff(frames.offsets).tolist()
    flat = np.concatenate(units)
    assert np.array_equal(flat, split_visemes(corpus / "test"))
    assert flat.min() >= 0 and flat.max() < 15 and 0 < (flat == 0).mean() < 0.5 and len(np.unique(flat)) >= 8


def test_lip_dct_features_and_bad_settings(corpus):
    frames = Ragged.load(corpus / "test" / "lips").data[:5]
    feats = lips.dct_features(frames, 8)
    assert feats.shape == (5, 64) and feats.dtype == np.float32
    # orthonormal: the DC coefficient is mean brightness * size (88 * mean for an 88 x 88 frame)
    assert np.allclose(feats[:, 0], frames.reshape(5, -1).mean(1) / 255.0 * 88, atol=1e-4)
    basis = lips.dct_matrix(88, 88)
    assert np.allclose(basis @ basis.T, np.eye(88), atol=1e-10)
    lips.check_settings({"n_units": 4, "fit_frames": 100, "features": "dct"})
    with pytest.raises(DmlmError, match=r"tokens\.lips\.features"):
        lips.check_settings({"n_units": 4, "fit_frames": 100, "features": "wavelets"})
    with pytest.raises(DmlmError, match=r"tokens\.lips\.features"):
        lips.fit({"n_units": 4, "fit_frames": 100, "seed": 1, "features": "wavelets"}, corpus / "test" / "lips")


def test_craft_default_weights_are_md5_checked(tmp_path, monkeypatch):
    import easyocr_en_models

    (tmp_path / "craft_mlt_25k.pth").write_bytes(b"tampered")
    (tmp_path / "english_g2.pth").write_bytes(b"tampered")
    monkeypatch.setattr(easyocr_en_models, "model_dir", lambda: str(tmp_path))
    with pytest.raises(DmlmError, match=r"tokens\.image\.weights.*MD5") as err:
        craft.check_settings(craft_settings())
    assert str(tmp_path / "craft_mlt_25k.pth") in str(err.value)


def test_craft_default_weights_check_imports_neither_easyocr_nor_torch():
    """The config check of the default CRAFT weights (run at every plan) is an MD5 against
    easyocr's table, read without importing easyocr (which loads torch): seconds saved per plan."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from dmlm.tokens.registry import check_settings\n"
        "check_settings('image', {'encoder': 'craft_kmeans', 'n_units': 4, 'fit_images': 2, 'patch': 10, 'seed': 0})\n"
        "print(sorted(m for m in ('easyocr', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
