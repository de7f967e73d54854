"""The final model file ``runs/{run}/checkpoint.pt``: everything needed to decode, nothing else.

Contents (a plain dict, loadable with ``torch.load(weights_only=True)``): ``format``, ``family``,
``config`` (the transformers config as JSON text), ``state_dict``, ``layout``
(``VocabLayout.to_dict()``), ``settings`` (the run's settings) and ``training`` (which evaluation
the weights come from, e.g. ``{best_step, metric, value, last_step}``; empty when not given). The model is rebuilt from the
config with the family's transformers classes; no pretrained folder is needed at load time.
``checkpoint.pt.sha256`` beside it holds its SHA-256, checked before every load (``dmlm.checksums``).
"""

from __future__ import annotations

import json
from pathlib import Path

from dmlm.errors import DmlmError
from dmlm.model.backbone import get_family
from dmlm.model.vocab import VocabLayout
from dmlm.checksums import save_torch, verify

FORMAT = "dmlm-checkpoint-1"


def save(path, model, layout: VocabLayout, settings: dict, training: dict | None = None) -> None:
    family = settings.get("backbone", {}).get("family", "opt")
    blob = {
        "format": FORMAT,
        "family": family,
        "config": model.config.to_json_string(use_diff=False),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "layout": layout.to_dict(),
        "settings": json.loads(json.dumps(settings)),
        "training": json.loads(json.dumps(training or {})),
    }
    save_torch(blob, path)


def load(path, device: str = "cpu"):
    """(model in eval mode on ``device``, layout, settings) of a checkpoint written by ``save``."""
    import torch

    path = Path(path)
    if not path.exists():
        raise DmlmError(f"checkpoint missing: {path}")
    verify(path)  # a flipped byte in a tensor would load without complaint
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DmlmError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise DmlmError(f"{path} is not a dmlm checkpoint (format {FORMAT})")
    family = get_family(blob["family"], blob["settings"].get("backbone_name", "?"))
    config = family.config_class().from_dict(json.loads(blob["config"]))
    model = family.model_class()(config)
    model.load_state_dict(blob["state_dict"])
    model.to(device).eval()
    return model, VocabLayout.from_dict(blob["layout"]), blob["settings"]
