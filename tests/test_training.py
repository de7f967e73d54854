"""The training loop: a real SIGKILL and resume, gradient accumulation, the loss at weighted positions
only, early stopping (and its state across a resume), settings checked before any work."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_model import CODEBOOKS, TINY, TINY_MAMBA, WEIGHTS, data, settings, tokenizer_json  # noqa: F401 (fixtures)

from dmlm.errors import DmlmError
from dmlm.model import checkpoint
from dmlm.model.backbone import build_backbone
from dmlm.model.batches import collate
from dmlm.model.train import TrainConfig, assemble_split, make_optimizer, token_losses, train_run, train_step
from dmlm.model.vocab import VocabLayout
from dmlm.storage import Ragged

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def train_argv(s, data, tokenizer_json, out):
    argv = [sys.executable, "-m", "dmlm", "train", "--threads", "1", "--settings", json.dumps(s)]
    argv += ["--tokenizer", tokenizer_json, "--out-dir", str(out)]
    for split, prefixes in data.items():
        argv += [arg for name, p in prefixes.items() for arg in ("--stream", f"{split}:{name}={p}")]
    return argv


def test_sigkill_midway_then_rerun_matches_an_uninterrupted_run(tokenizer_json, data, tmp_path):
    s = settings(backbone=dict(TINY, dropout=0.1))  # dropout: the torch RNG must be restored too
    # modality dropout: the rows without audio must be the same ones after the resume
    s["training"].update(max_steps=160, eval_every=10, grad_accum=2, drop_audio=0.3)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    state_path = killed / "state" / "last.pt"
    proc = subprocess.Popen(train_argv(s, data, tokenizer_json, killed), env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not state_path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed midway (rc {proc.returncode}):\n{err[-3000:]}"
    assert not (killed / "checkpoint.pt").exists()
    saved_step = torch.load(state_path, weights_only=False)["step"]
    assert 10 <= saved_step < 160 and saved_step % 10 == 0

    rerun = subprocess.run(train_argv(s, data, tokenizer_json, killed), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming {killed} after step {saved_step}" in rerun.stderr
    assert f"first step of this attempt: {saved_step + 1}\n" in rerun.stderr
    assert not state_path.exists()

    # the same run, never interrupted (in this process: same code, seed and thread count)
    train_run(s, data, tokenizer_json, str(tmp_path / "whole"))
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    b = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert a["training"] == b["training"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.allclose(a["state_dict"][k], b["state_dict"][k], atol=1e-6), k
    la = pd.read_csv(tmp_path / "whole" / "train_log.tsv", sep="\t")
    lb = pd.read_csv(killed / "train_log.tsv", sep="\t")
    cols = ["step", "train_loss", "val_loss", "val_transcript_loss", "lr"]
    pd.testing.assert_frame_equal(la[cols], lb[cols], rtol=1e-6)
    assert lb["step"].tolist() == list(range(0, 161, 10))


def _layout_and_seqs(tokenizer_json, data):
    layout = VocabLayout.from_tokenizer(["audio", "ocr"], CODEBOOKS, tokenizer_json)
    seqs = assemble_split({k: Ragged.load(p) for k, p in data["train"].items()}, layout, WEIGHTS)
    return layout, seqs


@pytest.mark.parametrize("tiny", [TINY, TINY_MAMBA], ids=["opt", "mamba"])
def test_accumulated_step_equals_one_step_on_the_union(tokenizer_json, data, tiny):
    layout, seqs = _layout_and_seqs(tokenizer_json, data)
    torch.manual_seed(0)
    one = build_backbone(tiny, layout.vocab_size, "tiny")
    two = copy.deepcopy(one)
    before = copy.deepcopy(one.state_dict())
    first, second = [collate(seqs, idx)[:2] for idx in ([0, 5, 9], [1, 2, 3, 4, 17])]
    union = collate(seqs, [0, 5, 9, 1, 2, 3, 4, 17])[:2]
    cpu = torch.device("cpu")
    # plain SGD: the update is the gradient itself (Adam's first step would amplify float noise
    # in gradients that are 0 in exact arithmetic, e.g. OPT's key biases, to full-size steps)
    loss_one = train_step(one, torch.optim.SGD(one.parameters(), lr=1.0), [union], 0.0, cpu)
    loss_two = train_step(two, torch.optim.SGD(two.parameters(), lr=1.0), [first, second], 0.0, cpu)
    assert loss_two == pytest.approx(loss_one, rel=1e-5)
    changed = 0
    for (name, p), q in zip(one.named_parameters(), two.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
        changed += int(not torch.allclose(p, before[name], atol=1e-4))
    assert changed > 10
    # the same with AdamW and clipping: only the run's own optimizer and settings
    cfg = TrainConfig(lr=1e-3)
    three, four = copy.deepcopy(one), copy.deepcopy(one)
    assert train_step(three, make_optimizer(three, cfg), [union], 1.0, cpu) == pytest.approx(
        train_step(four, make_optimizer(four, cfg), [second, first], 1.0, cpu), rel=1e-5
    )


@pytest.mark.parametrize("tiny", [TINY, TINY_MAMBA], ids=["opt", "mamba"])
def test_losses_at_selected_positions_equal_the_full_logits(tokenizer_json, data, tiny):
    import torch.nn.functional as F

    layout, seqs = _layout_and_seqs(tokenizer_json, data)
    torch.manual_seed(0)
    model = build_backbone(tiny, layout.vocab_size, "tiny").eval()
    ids, w, text = collate(seqs, [3, 7, 11, 20])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1]
        full = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        select = text[:, 1:]
        assert torch.allclose(token_losses(model, ids), full, atol=1e-5)
        assert torch.allclose(token_losses(model, ids, select), full[select], atol=1e-5)
    assert 0 < int(select.sum()) < select.numel()


def test_early_stopping_keeps_the_best_weights_across_a_resume(tokenizer_json, data, tmp_path, capsys):
    """A learning rate far too high makes every evaluation worse than the untrained model's: with
    patience 2 the run stops after 2 evaluations, and the checkpoint is the step-0 model."""
    s = settings()
    s["training"].update(
        max_steps=40, lr=0.5, warmup_steps=0, eval_every=2, early_stop_patience=2, early_stop_metric="val_loss"
    )
    # killed after step 3: the state of step 2 (one bad evaluation) survives
    assert train_run(s, data, tokenizer_json, str(tmp_path / "r"), stop_after_step=3) is None
    state = torch.load(tmp_path / "r" / "state" / "last.pt", weights_only=False)
    assert state["best"]["step"] == 0 and state["best"]["bad"] == 1
    capsys.readouterr()
    train_run(s, data, tokenizer_json, str(tmp_path / "r"))
    err = capsys.readouterr().err
    assert "early stop after step 4: no better val_loss in 2 evaluations" in err
    log = pd.read_csv(tmp_path / "r" / "train_log.tsv", sep="\t")
    assert log["step"].tolist() == [0, 2, 4]
    assert (log["val_loss"].iloc[1:] > log["val_loss"].iloc[0]).all()
    blob = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert blob["training"] == {"best_step": 0, "metric": "val_loss", "value": log["val_loss"].iloc[0], "last_step": 4}
    model, layout, _ = checkpoint.load(tmp_path / "r" / "checkpoint.pt")
    torch.manual_seed(s["seed"])
    initial = build_backbone(s["backbone"], layout.vocab_size, "tiny", layout)
    for k, v in initial.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("grad_accum", 0, r"training\.grad_accum must be positive"),
        ("early_stop_patience", -1, r"training\.early_stop_patience must be >= 0"),
        ("early_stop_metric", "wer", r"training\.early_stop_metric: expected one of"),
        ("device", "tpu", r"training\.device: expected one of auto, cpu, cuda"),
        ("precision", "fp16", r"training\.precision: expected one of auto, fp32, bf16"),
        ("lr", "fast", r"training\.lr: expected a number"),
        ("max_steps", 2.5, r"training\.max_steps: expected an integer"),
        ("warmup", 5, r"training\.warmup: unknown key"),
        ("schedule", "linear", r"training\.schedule: expected one of cosine, wsd"),
        ("decay_fraction", 1.5, r"training\.decay_fraction must be in \(0, 1\]"),
        ("decay_fraction", 0, r"training\.decay_fraction must be in \(0, 1\]"),
        ("drop_audio", 1.0, r"training\.drop_audio must be in \[0, 1\)"),
        ("drop_audio", -0.1, r"training\.drop_audio must be in \[0, 1\)"),
        ("drop_audio_until", 0, r"training\.drop_audio_until must be in \(0, 1\]"),
        ("drop_audio_until", 1.5, r"training\.drop_audio_until must be in \(0, 1\]"),
    ],
)
def test_bad_training_keys_fail_before_any_work(tokenizer_json, data, tmp_path, key, value, message):
    s = settings()
    s["training"][key] = value
    with pytest.raises(DmlmError, match=message):
        train_run(s, data, tokenizer_json, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_modality_dropout_trains_on_audio_free_rows_and_is_ignored_without_another_input(
    tokenizer_json, data, tmp_path, capsys
):
    """drop_audio changes what an A+O run trains on (not its validation data); an audio-only run
    has nothing else to read and trains exactly as without it."""
    logs = {}
    for name, modalities, share in [("ao", ["audio", "ocr"], 0.0), ("ao-drop", ["audio", "ocr"], 0.5),
                                    ("a", ["audio"], 0.0), ("a-drop", ["audio"], 0.5)]:
        s = settings(modalities=modalities)
        s["training"].update(max_steps=20, drop_audio=share)
        train_run(s, {split: {k: v for k, v in p.items() if k in (*modalities, "transcript")} for split, p in data.items()},
                  tokenizer_json, str(tmp_path / name))
        logs[name] = pd.read_csv(tmp_path / name / "train_log.tsv", sep="\t")
    assert "training.drop_audio = 0.5 ignored: audio is not beside another input" in capsys.readouterr().err
    cols = ["train_loss", "val_loss", "val_transcript_loss"]
    pd.testing.assert_frame_equal(logs["a"][cols], logs["a-drop"][cols])
    assert logs["ao"]["val_loss"].iloc[0] == logs["ao-drop"]["val_loss"].iloc[0]  # same validation data
    assert not logs["ao"]["train_loss"].iloc[1:].equals(logs["ao-drop"]["train_loss"].iloc[1:])


def test_modality_dropout_curriculum_falls_to_zero():
    """drop_audio_until: the share falls linearly from drop_audio at step 1 to 0 at that fraction
    of the steps, then stays 0; without it the share is constant."""
    curriculum = TrainConfig(max_steps=1000, drop_audio=0.5, drop_audio_until=0.5)  # 0 at step 501
    assert curriculum.drop_audio_at(1) == 0.5
    assert curriculum.drop_audio_at(126) == pytest.approx(0.375)  # a quarter of the way down
    assert [curriculum.drop_audio_at(s) for s in (501, 800, 1000)] == [0.0] * 3
    shares = [curriculum.drop_audio_at(s) for s in range(1, 1001)]
    assert all(a >= b for a, b in zip(shares, shares[1:]))
    constant = TrainConfig(max_steps=1001, drop_audio=0.5)
    assert {constant.drop_audio_at(s) for s in (1, 500, 1001)} == {0.5}


def test_learning_rate_schedules():
    """cosine: warm-up, then cosine to min_lr_ratio * lr; wsd: warm-up, lr held, then a linear
    decay over the last decay_fraction of the post-warm-up steps, ending at min_lr_ratio * lr."""
    base = dict(max_steps=1100, lr=2e-3, warmup_steps=100, min_lr_ratio=0.1)
    cosine = TrainConfig(**base)
    wsd = TrainConfig(**base, schedule="wsd", decay_fraction=0.2)  # decays over the last 200 steps
    for cfg in (cosine, wsd):
        assert cfg.lr_at(50) == pytest.approx(1e-3) and cfg.lr_at(100) == pytest.approx(2e-3)
        assert cfg.lr_at(1100) == pytest.approx(2e-4)
    assert cosine.lr_at(600) == pytest.approx(1.1e-3)  # half way: the mean of lr and min_lr
    assert [wsd.lr_at(s) for s in (101, 600, 900)] == [2e-3] * 3
    assert wsd.lr_at(1000) == pytest.approx(1.1e-3)  # half way through the decay
    lrs = [wsd.lr_at(s) for s in range(900, 1101)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # strictly decreasing while it decays


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_asked_for_without_a_gpu(tokenizer_json, data, tmp_path):
    s = settings()
    s["training"]["device"] = "cuda"
    with pytest.raises(DmlmError, match=r"training\.device: cuda was asked for"):
        train_run(s, data, tokenizer_json, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["backbones"]["opt-small"].update(family="mamba9"), r"backbones\.opt-small\.family"),
        (lambda c: c["backbones"]["mamba-small"].update(heads=4), r"backbones\.mamba-small.*heads"),
        (lambda c: c["backbones"]["mamba-small"].pop("state_size"), r"backbones\.mamba-small.*state_size"),
        (lambda c: c["loss_weights"]["paper"].update(audio=-0.3), r"loss_weights\.paper\.audio"),
        (lambda c: c["training"].update(grad_accum=0), r"training\.grad_accum"),
        (lambda c: c["training"].update(device="gpu"), r"training\.device"),
        (lambda c: c["training"].update(precision="fp16"), r"training\.precision"),
        (lambda c: c["training"].update(early_stop_metric="wer"), r"training\.early_stop_metric"),
        (lambda c: c["training"].update(patience=3), r"training.*patience"),
        (lambda c: c["training"].update(schedule="step"), r"training\.schedule"),
        (lambda c: c["tokens"]["text"].update(digits="bytes"), r"tokens\.text\.digits"),
        (lambda c: c["tokens"]["text"].update(written={"plus": ""}), r"tokens\.text\.written"),
    ],
)
def test_bad_config_values_name_their_key(edit, message):
    """The workflow config is checked when Snakemake parses it, before any job."""
    import yaml

    from dmlm.config import validate_config

    config = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())
    validate_config(copy.deepcopy(config))  # the shipped one, Mamba entry included, is fine
    edit(config)
    with pytest.raises(DmlmError, match=message):
        validate_config(config)


@pytest.mark.parametrize("tiny", [TINY, TINY_MAMBA], ids=["opt", "mamba"])
def test_bf16_autocast_step_trains_on_the_cpu_too(tokenizer_json, data, tiny):
    """The autocast path the GPU uses (also allowed on the CPU with precision: bf16): weights stay
    fp32, the loss halves on a fixed batch."""
    layout, seqs = _layout_and_seqs(tokenizer_json, data)
    torch.manual_seed(0)
    model = build_backbone(dict(tiny, hidden=64) if tiny is TINY_MAMBA else dict(tiny, hidden=64, ffn=128), layout.vocab_size, "t")
    opt = make_optimizer(model, TrainConfig(lr=3e-3, weight_decay=0.0))
    batch = [collate(seqs, list(range(8)))[:2]]
    losses = [train_step(model, opt, batch, 1.0, torch.device("cpu"), "bf16") for _ in range(60)]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
