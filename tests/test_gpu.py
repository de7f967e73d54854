"""CUDA paths: bf16 autocast training, SDPA attention, mamba-ssm kernels, decoding on the GPU.

Marked ``gpu``; skipped where torch sees no CUDA device (select them with ``pytest -m gpu``).
"""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
from test_model import CODEBOOKS, TINY, TINY_MAMBA, WEIGHTS, WORDS, data, make_split, settings, tokenizer_json  # noqa: F401 (fixtures)

from dmlm.model import checkpoint
from dmlm.model.backbone import build_backbone
from dmlm.model.batches import collate
from dmlm.model.decode import greedy_decode
from dmlm.model.device import resolve_device, resolve_precision
from dmlm.model.train import TrainConfig, assemble_split, make_optimizer, train_run, train_step
from dmlm.model.vocab import VocabLayout
from dmlm.storage import Ragged

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
FAMILIES = {"opt": dict(TINY, hidden=64, ffn=128), "mamba": dict(TINY_MAMBA, hidden=64)}


def test_auto_means_cuda_and_bf16_here():
    device = resolve_device("auto")
    assert device.type == "cuda"
    assert resolve_precision("auto", device) == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")


@pytest.mark.parametrize("family", ["opt", "mamba"])
def test_bf16_training_on_the_gpu_halves_the_loss(tokenizer_json, data, family):
    layout = VocabLayout.from_tokenizer(["audio", "ocr"], CODEBOOKS, tokenizer_json)
    seqs = assemble_split({k: Ragged.load(p) for k, p in data["train"].items()}, layout, WEIGHTS)
    batch = [collate(seqs, np.arange(8))[:2]]
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = build_backbone(FAMILIES[family], layout.vocab_size, "tiny").to(device).train()
    if family == "opt":
        assert model.config._attn_implementation == "sdpa"
    opt = make_optimizer(model, TrainConfig(lr=3e-3, weight_decay=0.0))
    losses = [train_step(model, opt, batch, 1.0, device, "bf16") for _ in range(100)]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 master weights
    assert losses[-1] < 0.5 * losses[0], losses[::10]


@pytest.mark.parametrize("family", ["opt", "mamba"])
def test_train_run_on_cuda_then_gpu_decoding_equals_cpu_decoding(tokenizer_json, data, tmp_path, capsys, family):
    eight = {"train": data["val"], "val": data["val"]}
    s = settings(backbone=FAMILIES[family])
    s["training"].update(max_steps=150, batch_size=8, lr=1e-2, warmup_steps=10, eval_every=50, val_batches=1)
    s["training"].update(device="auto", precision="auto")
    train_run(s, eight, tokenizer_json, str(tmp_path))
    assert "on cuda (bf16)" in capsys.readouterr().err
    log = pd.read_csv(tmp_path / "train_log.tsv", sep="\t")
    assert log["val_loss"].iloc[-1] < 0.5 * log["val_loss"].iloc[0]

    model, layout, _ = checkpoint.load(tmp_path / "checkpoint.pt")
    streams = {k: Ragged.load(p) for k, p in data["val"].items()}
    torch.backends.cudnn.allow_tf32 = False  # fp32 convolutions (Mamba's) as on the CPU
    cpu = greedy_decode(model, layout, streams, batch_size=3, max_new_tokens=20, progress=False)
    gpu_model = copy.deepcopy(model).to("cuda")
    gpu = greedy_decode(gpu_model, layout, streams, batch_size=3, max_new_tokens=20, progress=False)
    gpu_one = greedy_decode(gpu_model, layout, streams, batch_size=1, max_new_tokens=20, progress=False)
    assert [h.tolist() for h in gpu] == [h.tolist() for h in cpu] == [h.tolist() for h in gpu_one]
    # trained in bf16, it still has memorised (nearly) all of its 8 utterances
    assert sum(h.tolist() == t.tolist() for h, t in zip(cpu, streams["transcript"])) >= 6


@pytest.mark.skipif(importlib.util.find_spec("mamba_ssm") is None, reason="needs mamba-ssm's kernels")
def test_mamba_ssm_kernels_agree_with_the_cpu_scan(tokenizer_json, data):
    """With mamba-ssm installed, transformers runs its fused kernels on CUDA; they must compute
    what mambapy's scan computes on the CPU (forward and gradients)."""
    layout = VocabLayout.from_tokenizer(["audio", "ocr"], CODEBOOKS, tokenizer_json)
    seqs = assemble_split({k: Ragged.load(p) for k, p in data["train"].items()}, layout, WEIGHTS)
    ids, w, _ = collate(seqs, np.arange(8))
    torch.manual_seed(0)
    model = build_backbone(FAMILIES["mamba"], layout.vocab_size, "tiny").train()
    gpu = copy.deepcopy(model).to("cuda")
    from dmlm.model.objective import weighted_loss

    loss_cpu = weighted_loss(model, ids, w)
    loss_gpu = weighted_loss(gpu, ids.cuda(), w.cuda())
    loss_cpu.backward()
    loss_gpu.backward()
    assert float(loss_gpu) == pytest.approx(float(loss_cpu), rel=1e-3)
    for (name, p), q in zip(model.named_parameters(), gpu.parameters()):
        assert torch.allclose(p.grad, q.grad.cpu(), rtol=1e-2, atol=1e-4), name
