"""OCR of the corpus images: tesseract's recall, EasyOCR offline from local weights, the auto
fallback, bad inputs named. The `corpus` and `manifest` fixtures are in conftest.py."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

from conftest import SMALL_CORPUS as SETTINGS  # noqa: E402
from conftest import SMALL_CORPUS_SIZE as N  # noqa: E402
from dmlm.corpus import equations as E
from dmlm.corpus.ocr import join_lines, run_ocr
from dmlm.errors import DmlmError
from dmlm.storage import read_table


def char_recall(reference: str, hypothesis: str) -> tuple[int, int]:
    """(matched, total) characters of ``reference`` (spaces ignored) under a Levenshtein
    alignment with ``hypothesis``: matched = total - deletions - substitutions."""
    from rapidfuzz.distance import Levenshtein

    ref, hyp = reference.replace(" ", ""), hypothesis.replace(" ", "")
    ops = Levenshtein.editops(ref, hyp)
    lost = sum(1 for op in ops if op.tag in ("delete", "replace"))
    return len(ref) - lost, len(ref)


def best_recall(hypothesis: str, equations: list[str]) -> tuple[int, int]:
    """Character recall of an OCR text against the 3 equations in the order that matches it best
    (the manifest does not record where each equation was drawn; OCR reads top to bottom)."""
    import itertools

    return max((char_recall(E.ocr_reference(list(p)), hypothesis)
                for p in itertools.permutations(equations)), key=lambda mt: mt[0])


def test_ocr_tesseract_recall(corpus, manifest, tmp_path):
    if shutil.which("tesseract") is None:
        pytest.skip("tesseract is not installed")
    out = tmp_path / "ocr.tsv"
    frame = run_ocr(corpus / "images.npy", corpus / "manifest.tsv", out, "tesseract", threads=2)
    table = read_table(out)
    assert list(table.columns) == ["id", "ocr", "engine"]
    assert table["id"].tolist() == manifest["id"].tolist() and set(table["engine"]) == {"tesseract"}
    matched = total = 0
    for hyp, eqs in zip(frame["ocr"], manifest["equations"]):
        assert hyp == join_lines([hyp])  # already post-processed
        assert set(hyp) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-= ")
        m, t = best_recall(hyp, json.loads(eqs))
        matched, total = matched + m, total + t
    assert matched / total >= 0.90, matched / total


def test_ocr_easyocr_offline(corpus, manifest, tmp_path):
    pytest.importorskip("easyocr", reason="easyocr is not installed")
    try:
        from dmlm.corpus.ocr import easyocr_model_dir

        easyocr_model_dir()
    except DmlmError as err:
        pytest.skip(f"EasyOCR weights unavailable offline: {err}")
    from dmlm.corpus.ocr import ocr_images

    images = np.load(corpus / "images.npy")[:3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        texts = ocr_images(images, "easyocr", threads=1, progress=False)
    matched = total = 0
    for hyp, eqs in zip(texts, manifest["equations"][:3]):
        m, t = best_recall(hyp, json.loads(eqs))
        matched, total = matched + m, total + t
    assert matched / total >= 0.85, (matched / total, texts)


def test_easyocr_weight_mismatch(tmp_path):
    pytest.importorskip("easyocr", reason="easyocr is not installed")
    from dmlm.corpus.ocr import easyocr_model_dir

    (tmp_path / "craft_mlt_25k.pth").write_bytes(b"not the weights")
    (tmp_path / "english_g2.pth").write_bytes(b"not the weights")
    with pytest.raises(DmlmError, match="craft_mlt_25k.pth"):
        easyocr_model_dir(tmp_path)


def test_ocr_auto_falls_back_to_tesseract_and_says_so(corpus, tmp_path, capfd):
    """auto with broken EasyOCR weights: tesseract reads the images, the engine column says so."""
    from dmlm.corpus.ocr import resolve_auto

    (tmp_path / "craft_mlt_25k.pth").write_bytes(b"not the weights")
    (tmp_path / "english_g2.pth").write_bytes(b"not the weights")
    assert resolve_auto(tmp_path) == "tesseract"
    assert "falling back to tesseract" in capfd.readouterr().err
    frame = run_ocr(corpus / "images.npy", corpus / "manifest.tsv", tmp_path / "o.tsv", engine="auto",
                    model_dir=tmp_path)
    assert set(frame["engine"]) == {"tesseract"}
    assert frame["ocr"].str.len().min() > 5


def test_ocr_bad_input(corpus, tmp_path):
    missing = tmp_path / "nope" / "images.npy"
    with pytest.raises(DmlmError, match=str(missing)):
        run_ocr(missing, corpus / "manifest.tsv", tmp_path / "o.tsv")
    with pytest.raises(DmlmError, match=r"corpus\.ocr\.engine"):
        run_ocr(corpus / "images.npy", corpus / "manifest.tsv", tmp_path / "o.tsv", engine="magic")
    assert not (tmp_path / "o.tsv").exists()


def _bad_images(tmp_path, corpus):
    """(file, what the message must say) for broken images.npy files."""
    good = np.load(corpus / "images.npy", mmap_mode="r")
    cases = []

    def save(name, array, **kw):
        path = tmp_path / name
        np.save(path, array, **kw)
        return path

    cases.append((save("float.npy", np.asarray(good[:N], dtype=np.float32)), "uint8"))
    cases.append((save("flat.npy", np.asarray(good[:N]).reshape(N, -1)), "uint8"))
    cases.append((save("rgb.npy", np.repeat(np.asarray(good[:N])[..., None], 3, axis=-1)), "uint8"))
    cases.append((save("tiny.npy", np.zeros((N, 2, 2), np.uint8)), "too small"))
    cases.append((save("objects.npy", np.array([None] * N, dtype=object), allow_pickle=True),
                  "not a readable"))
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    cases.append((empty, "empty"))
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"this is not an array" * 20)
    cases.append((junk, "not a readable"))
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes((corpus / "images.npy").read_bytes()[:5000])
    cases.append((truncated, "not a readable"))
    npz = tmp_path / "archive.npy"
    with open(npz, "wb") as f:
        np.savez(f, images=np.asarray(good[:2]))
    cases.append((npz, "one .npy array"))
    return cases


def test_ocr_bad_media(corpus, manifest, tmp_path):
    """Corrupt or mismatched inputs give a DmlmError naming the file, before any OCR runs."""
    out = tmp_path / "o.tsv"
    for path, what in _bad_images(tmp_path, corpus):
        with pytest.raises(DmlmError, match=str(path)) as err:
            run_ocr(path, corpus / "manifest.tsv", out)
        assert what in str(err.value), (path.name, str(err.value))
    # a manifest whose ids do not match the images' count (another split, or cut short)
    short = tmp_path / "short.tsv"
    manifest.iloc[:N - 1].to_csv(short, sep="\t", index=False)
    with pytest.raises(DmlmError, match=f"{short}.*{N - 1} ids.*{N} images"):
        run_ocr(corpus / "images.npy", short, out)
    # empty manifest, no id column, repeated and empty ids
    bad = tmp_path / "m.tsv"
    for text, what in [("", "empty"), ("name\tx\n1\t2\n", "id"),
                       ("id\na\na\n", "repeated"), ("id\tx\n\t1\n", "empty id")]:
        bad.write_text(text)
        with pytest.raises(DmlmError, match=str(bad)) as err:
            run_ocr(corpus / "images.npy", bad, out)
        assert what in str(err.value), (text, str(err.value))
    assert not out.exists()
    # an empty split (0 images, header-only manifest) is fine: an empty ocr.tsv
    none = tmp_path / "none.npy"
    np.save(none, np.zeros((0, 200, 450), np.uint8))
    header = tmp_path / "header.tsv"
    header.write_text("\t".join(manifest.columns) + "\n")
    assert len(run_ocr(none, header, out)) == 0 and read_table(out).empty


def test_cli(corpus, tmp_path):
    import argparse

    from dmlm.corpus.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["ocr", "--images", str(tmp_path / "missing.npy"), "--manifest",
                              str(corpus / "manifest.tsv"), "--out", str(tmp_path / "o.tsv")])
    with pytest.raises(DmlmError, match="missing.npy"):
        args.func(args)
    args = parser.parse_args(["ocr", "--images", str(corpus / "images.npy"), "--manifest",
                              str(corpus / "manifest.tsv"), "--out", str(tmp_path / "o.tsv"),
                              "--settings", '{"engine": "nope"}'])
    with pytest.raises(DmlmError, match=r"corpus\.ocr\.engine"):
        args.func(args)
    args = parser.parse_args(["corpus", "--split", "val", "--n", "2", "--out-dir",
                              str(tmp_path / "c"), "--settings", json.dumps(SETTINGS)])
    args.func(args)
    assert len(read_table(tmp_path / "c" / "manifest.tsv")) == 2
