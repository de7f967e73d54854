"""The trained lip reader (encoder ``lip_reader``): learns visemes from the training split's frames,
names them on held-out speakers from pixels alone, deterministically, through the registry."""

from __future__ import annotations


import numpy as np
import pytest

from dmlm.errors import DmlmError
from dmlm.storage import Ragged, read_table
from dmlm.tokens import lipreader, lips, visemes
from dmlm.tokens.codebook import Codebook, collapse_repeats

from conftest import split_visemes  # noqa: E402

SETTINGS = {"encoder": "lip_reader", "fit_frames": 4000, "downsample": 22, "epochs": 6, "seed": 1234,
            "collapse_repeats": False}


@pytest.fixture(scope="module")
def corpus(visual_corpus):
    return visual_corpus


@pytest.fixture(scope="module")
def reader(corpus):
    return lipreader.fit(SETTINGS, corpus / "train" / "lips")


def test_names_visemes_of_held_out_speakers_better_than_pixel_units(corpus, reader):
    from sklearn.metrics import normalized_mutual_info_score

    train, test = (read_table(corpus / s / "manifest.tsv") for s in ("train", "test"))
    assert not set(train["speaker"]) & set(test["speaker"])
    truth = split_visemes(corpus / "test")
    units = np.concatenate(lipreader.encode(reader, corpus / "test" / "lips"))
    assert len(units) == len(truth) and units.min() >= 0 and units.max() < 15
    majority = np.bincount(truth).max() / len(truth)
    accuracy = float((units == truth).mean())
    kmeans = lips.fit({"encoder": "pixel_kmeans", "n_units": 32, "fit_frames": 50000, "downsample": 22,
                       "seed": 1234}, corpus / "train" / "lips")
    pixel_units = np.concatenate(lips.encode(kmeans, corpus / "test" / "lips"))
    nmi_reader, nmi_pixels = (normalized_mutual_info_score(truth, u) for u in (units, pixel_units))
    print(f"lip reader: accuracy {accuracy:.3f} (majority {majority:.3f}), NMI {nmi_reader:.3f} "
          f"against pixel k-means' {nmi_pixels:.3f}")
    assert accuracy >= majority + 0.1
    assert nmi_reader > nmi_pixels


def test_deterministic_and_saved_weights_give_the_same_units(corpus, reader, tmp_path):
    from dmlm.tokens.registry import describe, encode_media, fit_codebook

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1 if before > 1 else 2)  # the job's thread count must not matter
    try:
        again = lipreader.fit(SETTINGS, corpus / "train" / "lips")
    finally:
        torch.set_num_threads(before)
    assert all(np.array_equal(reader.arrays[k], again.arrays[k]) for k in reader.arrays)
    fit_codebook("lips", {**SETTINGS, "frame_stack": 2, "collapse_repeats": True}, corpus / "train" / "lips",
                 tmp_path / "cb.npz")
    loaded = Codebook.load(tmp_path / "cb.npz")
    assert loaded.arrays.keys() == reader.arrays.keys() and loaded.settings["context"] == 2
    ids = encode_media("lips", tmp_path / "cb.npz", corpus / "test" / "lips", tmp_path / "tok")
    stacked = [visemes.stacked_mode(u, 2) for u in lipreader.encode(reader, corpus / "test" / "lips")]
    assert all(np.array_equal(a, collapse_repeats(b)) for a, b in zip(ids, stacked))
    assert len(Ragged.load(tmp_path / "tok.times")) == len(ids)
    assert describe(tmp_path / "cb.npz") == {"vocab_size": 15, "frame_rate": 12.5, "modality": "lips",
                                             "encoder": "lip_reader"}


def test_bad_settings_and_foreign_weights_are_named(corpus, reader):
    with pytest.raises(DmlmError, match=r"tokens\.lips\.context"):
        lipreader.check_settings({**SETTINGS, "context": -1})
    with pytest.raises(DmlmError, match=r"tokens\.lips\.fit_frames"):
        lipreader.check_settings({k: v for k, v in SETTINGS.items() if k != "fit_frames"})
    wrong = Codebook(reader.centroids, {**reader.settings, "width": 8}, reader.arrays)
    with pytest.raises(DmlmError, match="weights do not fit the network"):
        lipreader.encode(wrong, corpus / "test" / "lips")
