"""Changed bytes in weights files stop the stage that reads them (issue 18): our checkpoints and
training state carry a SHA-256 sidecar; pretrained backbones, CRAFT and Whisper weights are recorded
at first use. Each test flips one byte inside tensor data, where loading alone would not notice."""

from __future__ import annotations

import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from test_audio_units import needs_whisper
from test_model import TINY, data, settings, tokenizer_json  # noqa: F401 (fixtures)

from dmlm.errors import DmlmError
from dmlm.model import checkpoint
from dmlm.model.backbone import build_backbone
from dmlm.model.train import train_run

torch.set_num_threads(1)


def flip(path: Path, offset: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x10
    path.write_bytes(bytes(blob))


def flip_torch_tensor_byte(path: Path) -> None:
    """Flip a byte in the middle of the largest tensor of a torch.save zip (stored, not compressed);
    in a legacy (pre-zip) file, whose tensor storages follow the pickle, near the end."""
    if not zipfile.is_zipfile(path):
        flip(path, path.stat().st_size - 1001)
        return
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    flip(path, info.header_offset + 30 + name_len + extra_len + info.file_size // 2)


def train_tiny(data, tokenizer_json, out: Path, **kw):
    s = settings()
    s["training"].update(max_steps=4, eval_every=2)
    return train_run(s, data, tokenizer_json, str(out), **kw)


def test_checkpoint_with_a_changed_byte_is_refused(data, tokenizer_json, tmp_path):
    train_tiny(data, tokenizer_json, tmp_path / "run")
    path = tmp_path / "run" / "checkpoint.pt"
    checkpoint.load(path)  # intact: loads
    flip_torch_tensor_byte(path)
    torch.load(path, weights_only=True)  # torch itself does not notice
    with pytest.raises(DmlmError, match=r"checkpoint\.pt: SHA-256 .* does not match checkpoint\.pt\.sha256") as err:
        checkpoint.load(path)
    assert str(path) in str(err.value)
    assert (tmp_path / "run" / "checkpoint.pt.sha256").read_text().split()[1] == "checkpoint.pt"  # sha256sum -c reads it

    (tmp_path / "run" / "checkpoint.pt.sha256").unlink()
    with pytest.raises(DmlmError, match=r"no checksum file checkpoint\.pt\.sha256"):
        checkpoint.load(path)


def test_the_same_run_writes_the_same_checkpoint_bytes(data, tokenizer_json, tmp_path):
    """Written through a temporary file and renamed: the bytes must not depend on the temporary
    name (torch.save to a path names the archive's records after it), so checksums of two
    trainings of one config and seed agree."""
    train_tiny(data, tokenizer_json, tmp_path / "a")
    train_tiny(data, tokenizer_json, tmp_path / "b")
    for name in ("checkpoint.pt", "checkpoint.pt.sha256"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_resuming_from_a_changed_state_is_refused(data, tokenizer_json, tmp_path):
    assert train_tiny(data, tokenizer_json, tmp_path / "run", stop_after_step=3) is None
    state = tmp_path / "run" / "state" / "last.pt"
    flip_torch_tensor_byte(state)
    with pytest.raises(DmlmError, match=r"state/last\.pt: SHA-256 .* does not match last\.pt\.sha256"):
        train_tiny(data, tokenizer_json, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_resume_after_a_state_without_sidecar_starts_afresh(data, tokenizer_json, tmp_path, capsys):
    """A crash between writing the state and its sidecar leaves no sidecar: the state is ignored."""
    train_tiny(data, tokenizer_json, tmp_path / "run", stop_after_step=3)
    (tmp_path / "run" / "state" / "last.pt.sha256").unlink()
    capsys.readouterr()
    train_tiny(data, tokenizer_json, tmp_path / "run")
    assert "ignoring state" in capsys.readouterr().err
    checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    assert not (tmp_path / "run" / "state" / "last.pt.sha256").exists()


def test_changed_pretrained_backbone_weights_are_refused(tmp_path):
    from transformers import OPTConfig, OPTForCausalLM

    folder = tmp_path / "tiny-opt"
    config = OPTConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
                       max_position_embeddings=32, word_embed_proj_dim=16)
    OPTForCausalLM(config).save_pretrained(str(folder))
    backbone = {"family": "opt", "pretrained": str(folder)}
    build_backbone(backbone, 48, "opt-pre")  # first use: recorded
    weights = folder / "model.safetensors"
    flip(weights, weights.stat().st_size - 7)  # inside the last tensor's data
    OPTForCausalLM.from_pretrained(str(folder))  # transformers does not notice
    with pytest.raises(DmlmError, match=r"backbones\.opt-pre\.pretrained: .*model\.safetensors changed since its first use"
                       r".*delete .*\.json to accept it") as err:
        build_backbone(backbone, 48, "opt-pre")
    assert str(weights.resolve()) in str(err.value)


def test_changed_craft_weights_are_refused(tmp_path):
    from dmlm.tokens import craft

    weights = tmp_path / "craft_mlt_25k.pth"
    shutil.copy(craft.default_weights(), weights)
    settings = {"patch": 25, "layer": "relu2_2", "weights": str(weights)}
    craft.CraftFeatures(settings)
    flip_torch_tensor_byte(weights)
    craft.load_backbone(weights, 2)  # loads: the changed byte is inside a tensor
    with pytest.raises(DmlmError, match=r"tokens\.image\.weights: .*craft_mlt_25k\.pth changed since its first use"):
        craft.CraftFeatures(settings)


@needs_whisper
def test_changed_whisper_weights_are_refused(tmp_path):
    from dmlm.tokens.whisper import WhisperEncoder, default_weights

    folder = shutil.copytree(default_weights(), tmp_path / "whisper")
    WhisperEncoder(folder, threads=1, device="cpu")
    model = folder / "model.bin"
    flip(model, model.stat().st_size - 1001)  # inside the last weights of the model file
    with pytest.raises(DmlmError, match=r"tokens\.audio\.weights: .*whisper/model\.bin changed since its first use"):
        WhisperEncoder(folder, threads=1, device="cpu")
