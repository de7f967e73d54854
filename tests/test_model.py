"""DMLM model stage: vocabulary, sequences, training (resume), checkpoints, greedy decoding."""

from __future__ import annotations

import argparse
import copy

import numpy as np
import pandas as pd
import pytest
import torch

from dmlm.errors import DmlmError
from dmlm.model import checkpoint
from dmlm.model.backbone import build_backbone
from dmlm.model.cli import parse_streams, register
from dmlm.model.decode import greedy_decode
from dmlm.model.sequence import assemble, prompt
from dmlm.model.train import TrainConfig, assemble_split, collate, make_optimizer, train_run, weighted_loss
from dmlm.model.vocab import BOS, EOS, TEXT, VocabLayout
from dmlm.storage import Ragged, save_ragged

torch.set_num_threads(1)

WORDS = ["[UNK]", "zero", "one", "two", "three", "four", "five", "plus", "minus", "equals"]
CODEBOOKS = {"audio": 16, "lips": 8, "image": 8}
WEIGHTS = {"audio": 0.3, "lips": 0.5, "image": 0.5, "ocr": 0.5, "transcript": 1.0}
TINY = {"family": "opt", "hidden": 32, "layers": 2, "heads": 2, "ffn": 64, "max_positions": 64, "dropout": 0.0}
TINY_MAMBA = {"family": "mamba", "hidden": 32, "layers": 2, "state_size": 8, "expand": 2, "conv_kernel": 4}
#: a slightly wider model of each family, for the tests that memorise data
WIDE = {"opt": dict(TINY, hidden=64, ffn=128), "mamba": dict(TINY_MAMBA, hidden=64)}


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return str(path)


def make_split(folder, n, seed):
    """Ragged streams where the audio spells the transcript (so it is learnable) plus OCR noise."""
    rng = np.random.default_rng(seed)
    transcripts = [rng.integers(1, len(WORDS), rng.integers(3, 7)) for _ in range(n)]
    audio = [np.concatenate([[(3 * w) % 16, (3 * w + 1) % 16] for w in t]) for t in transcripts]
    ocr = [rng.integers(1, len(WORDS), rng.integers(0, 4)) for _ in range(n)]
    prefixes = {}
    for name, items in (("audio", audio), ("ocr", ocr), ("transcript", transcripts)):
        prefixes[name] = str(folder / name)
        save_ragged(prefixes[name], items, dtype=np.int32)
    return prefixes


def settings(**over):
    s = {
        "modalities": ["audio", "ocr"],
        "vocab": dict(CODEBOOKS),
        "backbone": dict(TINY),
        "backbone_name": "tiny",
        "loss_weights": dict(WEIGHTS),
        "loss_weights_name": "paper",
        "training": {
            "max_steps": 40,
            "batch_size": 4,
            "lr": 3e-3,
            "min_lr_ratio": 0.1,
            "warmup_steps": 5,
            "weight_decay": 0.01,
            "grad_clip": 1.0,
            "eval_every": 10,
            "val_batches": 2,
        },
        "seed": 7,
    }
    for key, value in over.items():
        s[key] = value
    return s


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "train").mkdir()
    (root / "val").mkdir()
    return {"train": make_split(root / "train", 24, 1), "val": make_split(root / "val", 8, 2)}


def test_layout_and_assembled_sequence():
    layout = VocabLayout(["audio", "ocr"], CODEBOOKS, 10)
    assert (layout.text_range, layout.offsets["audio"], layout.offsets["lips"], layout.offsets["image"]) == (
        (12, 22),
        22,
        38,
        46,
    )
    assert layout.vocab_size == 54
    assert VocabLayout.from_dict(layout.to_dict()).offsets == layout.offsets
    streams = {"audio": np.array([0, 5]), "ocr": np.array([3]), "transcript": np.array([1, 2])}
    ids, w = assemble(streams, layout, WEIGHTS)
    # <bos> <audio> a0 a5 </audio> <ocr> t3 </ocr> <text> t1 t2 </s>
    assert ids.tolist() == [BOS, 4, 22, 27, 5, 10, 15, 11, TEXT, 13, 14, EOS]
    assert w.tolist() == pytest.approx([0, 0.3, 0.3, 0.3, 0.3, 0.5, 0.5, 0.5, 1, 1, 1, 1])
    assert w[4] == pytest.approx(0.3)  # </audio> belongs to audio
    assert w[9] == 1.0 and w[-1] == 1.0  # a transcript token and </s>
    assert prompt(streams, layout).tolist() == ids[:9].tolist()
    assert layout.to_text(ids[9:11]).tolist() == [1, 2]
    with pytest.raises(DmlmError, match="audio token ids"):
        assemble({**streams, "audio": np.array([16])}, layout, WEIGHTS)


@pytest.mark.parametrize("family", ["opt", "mamba"])
def test_tiny_model_overfits_a_fixed_batch(tokenizer_json, data, family):
    layout = VocabLayout.from_tokenizer(["audio", "ocr"], CODEBOOKS, tokenizer_json)
    seqs = assemble_split({k: Ragged.load(p) for k, p in data["train"].items()}, layout, WEIGHTS)
    ids, w, _ = collate(seqs, np.arange(8))
    torch.manual_seed(0)
    model = build_backbone(WIDE[family], layout.vocab_size, "tiny")
    losses = fixed_batch_losses(model, ids, w)
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def fixed_batch_losses(model, ids, w, steps=100):
    """The weighted loss of ``steps`` AdamW steps on one fixed batch (lr 3e-3, no weight decay)."""
    opt = make_optimizer(model, TrainConfig(lr=3e-3, weight_decay=0.0))
    losses = []
    for _ in range(steps):
        loss = weighted_loss(model, ids, w)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def run_cli(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    args.func(args)


def test_train_run_end_to_end_via_cli(tokenizer_json, data, tmp_path):
    import json

    out = tmp_path / "run"
    argv = ["train", "--settings", json.dumps(settings()), "--tokenizer", tokenizer_json, "--out-dir", str(out)]
    for split, prefixes in data.items():
        argv += [arg for name, p in prefixes.items() for arg in ("--stream", f"{split}:{name}={p}")]
    run_cli(argv)
    log = pd.read_csv(out / "train_log.tsv", sep="\t")
    assert list(log.columns) == ["step", "train_loss", "val_loss", "val_transcript_loss", "lr", "tokens_per_s", "elapsed_s"]
    assert log["step"].tolist() == [0, 10, 20, 30, 40]
    assert log["val_loss"].iloc[-1] < log["val_loss"].iloc[0]
    assert log["val_transcript_loss"].iloc[-1] < log["val_transcript_loss"].iloc[0]
    assert not (out / "state" / "last.pt").exists()  # removed once the checkpoint is written
    model, layout, saved = checkpoint.load(out / "checkpoint.pt")
    assert not model.training and saved == settings() and layout.modalities == ["audio", "ocr"]


def test_resume_is_exact(tokenizer_json, data, tmp_path, capsys):
    s = settings(backbone=dict(TINY, dropout=0.1))  # dropout: the torch RNG must be restored too
    s["training"].update(max_steps=20, eval_every=5)
    train_run(s, data, tokenizer_json, str(tmp_path / "a"))
    # "killed" after step 12: only the state of step 10 survives
    assert train_run(s, data, tokenizer_json, str(tmp_path / "b"), stop_after_step=12) is None
    assert not (tmp_path / "b" / "checkpoint.pt").exists()
    state = torch.load(tmp_path / "b" / "state" / "last.pt", weights_only=False)
    assert state["step"] == 10 and state["data_position"] == {"epoch": 1, "batch": 4}
    train_run(s, data, tokenizer_json, str(tmp_path / "b"))
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    la = pd.read_csv(tmp_path / "a" / "train_log.tsv", sep="\t")
    lb = pd.read_csv(tmp_path / "b" / "train_log.tsv", sep="\t")
    cols = ["step", "train_loss", "val_loss", "val_transcript_loss", "lr"]
    pd.testing.assert_frame_equal(la[cols], lb[cols])
    # a state of other settings is ignored, not resumed
    train_run(s, data, tokenizer_json, str(tmp_path / "c"), stop_after_step=5)
    other = copy.deepcopy(s)
    other["seed"] = 8
    capsys.readouterr()
    train_run(other, data, tokenizer_json, str(tmp_path / "c"))
    assert "starting afresh" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "c" / "train_log.tsv", sep="\t")["step"].tolist() == [0, 5, 10, 15, 20]


@pytest.fixture(scope="module", params=["opt", "mamba"])
def overfit(tokenizer_json, data, tmp_path_factory, request):
    """A tiny model of each family trained until it memorises 8 utterances (train = val)."""
    eight = {"train": data["val"], "val": data["val"]}
    s = settings(backbone=WIDE[request.param])
    s["training"].update(max_steps=150, batch_size=8, lr=1e-2, warmup_steps=10, eval_every=150, val_batches=1)
    out = tmp_path_factory.mktemp("overfit")
    train_run(s, eight, tokenizer_json, str(out))
    model, layout, saved = checkpoint.load(out / "checkpoint.pt")
    assert saved["backbone"]["family"] == request.param == model.config.model_type
    streams = {k: Ragged.load(p) for k, p in data["val"].items()}
    return model, layout, streams


def test_overfitted_model_reproduces_its_transcripts(overfit):
    model, layout, streams = overfit
    hyps = greedy_decode(model, layout, streams, batch_size=8, max_new_tokens=20, progress=False)
    for hyp, ref in zip(hyps, streams["transcript"]):
        assert hyp.tolist() == ref.tolist()


def test_rows_that_finish_early_leave_the_batch_without_changing_the_others(overfit):
    """Rows end at different steps (their </s>, or the token cap) and are dropped from the batch and
    its cache; the rows still decoding write what they write alone."""
    model, layout, streams = overfit
    refs = [r.tolist() for r in streams["transcript"]]
    assert len({len(r) for r in refs}) > 1
    cap = sorted(len(r) for r in refs)[len(refs) // 2]  # some rows stop at </s>, the others at the cap
    hyps = greedy_decode(model, layout, streams, batch_size=8, max_new_tokens=cap, progress=False)
    assert [h.tolist() for h in hyps] == [r[:cap] for r in refs]


def test_batched_decoding_equals_unbatched(overfit):
    model, layout, streams = overfit
    model = copy.deepcopy(model)
    torch.manual_seed(3)
    with torch.no_grad():  # scramble it so the outputs are diverse and not memorised
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    one = greedy_decode(model, layout, streams, batch_size=1, max_new_tokens=12, progress=False)
    for bs in (3, 8):
        batched = greedy_decode(model, layout, streams, batch_size=bs, max_new_tokens=12, progress=False)
        assert [h.tolist() for h in batched] == [h.tolist() for h in one]
    assert len({tuple(h.tolist()) for h in one}) > 1
    assert all(len(h) <= 12 for h in one)
    # and the cached decoder (OPT's keys/values, Mamba's recurrent state) equals a plain full
    # recompute per token
    start, stop = layout.text_range
    for i in (0, 5):
        x = prompt({m: streams[m][i] for m in layout.modalities}, layout).tolist()
        ref = []
        for _ in range(12):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([x])).logits[0, -1]
            allowed = torch.full_like(logits, float("-inf"))
            allowed[start:stop] = 0
            allowed[EOS] = 0
            token = int((logits + allowed).argmax())
            if token == EOS:
                break
            ref.append(token - start)
            x.append(token)
        assert one[i].tolist() == ref


@pytest.mark.parametrize("tiny", [TINY, TINY_MAMBA], ids=["opt", "mamba"])
def test_checkpoint_roundtrip_and_pretrained_folder(tmp_path, tiny):
    family = tiny["family"]
    layout = VocabLayout(["audio"], CODEBOOKS, 10)
    torch.manual_seed(0)
    model = build_backbone(tiny, layout.vocab_size, "tiny").eval()
    checkpoint.save(tmp_path / "c.pt", model, layout, {"backbone": tiny})
    loaded, layout2, s = checkpoint.load(tmp_path / "c.pt")
    x = torch.tensor([[BOS, 4, 22, 23, 5, TEXT, 13]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, loaded(input_ids=x).logits)
    assert layout2.to_dict() == layout.to_dict() and s == {"backbone": tiny}
    assert type(loaded) is type(model) and loaded.config.model_type == family

    model.save_pretrained(tmp_path / "pre")
    resized = build_backbone({"family": family, "pretrained": str(tmp_path / "pre")}, 80, "big")
    assert type(resized) is type(model)
    assert resized.get_input_embeddings().weight.shape[0] == 80
    assert resized.get_output_embeddings().weight.shape[0] == 80
    assert torch.equal(resized.get_input_embeddings().weight[:54], model.get_input_embeddings().weight)
    # the pretrained body is kept: same outputs on the old ids (new rows only widen the softmax)
    with torch.no_grad():
        assert torch.allclose(resized(input_ids=x).logits[..., :54], model(input_ids=x).logits, atol=1e-5)
    with pytest.raises(DmlmError, match=r"backbones\.big\.pretrained"):
        build_backbone({"family": family, "pretrained": str(tmp_path / "nowhere")}, 80, "big")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(DmlmError, match=r"backbones\.big\.pretrained"):
        build_backbone({"family": family, "pretrained": str(tmp_path / "bad")}, 80, "big")
    other = "mamba" if family == "opt" else "opt"  # a folder of the other family
    with pytest.raises(DmlmError, match=r"backbones\.big\.pretrained"):
        build_backbone({"family": other, "pretrained": str(tmp_path / "pre")}, 80, "big")


def test_mamba_length_policy(tokenizer_json, data, tmp_path):
    """No position table: no limit unless max_positions is set, which is then enforced like OPT's."""
    from dmlm.model.backbone import max_positions, model_max_positions

    layout = VocabLayout(["audio"], CODEBOOKS, 10)
    free = build_backbone(TINY_MAMBA, layout.vocab_size, "m")
    assert max_positions(TINY_MAMBA) is None and model_max_positions(free) is None
    capped = build_backbone(dict(TINY_MAMBA, max_positions=40), layout.vocab_size, "m")
    assert max_positions(dict(TINY_MAMBA, max_positions=40)) == 40 == model_max_positions(capped)
    checkpoint.save(tmp_path / "c.pt", capped, layout, {"backbone": TINY_MAMBA})
    assert model_max_positions(checkpoint.load(tmp_path / "c.pt")[0]) == 40
    # 300 positions: more than any limit above, fine without one
    with torch.no_grad():
        assert free(input_ids=torch.randint(12, 54, (1, 300))).logits.shape == (1, 300, 54)
    with pytest.raises(DmlmError, match=r"backbones\.m\.max_positions.*\d+ tokens"):
        train_run(settings(backbone=dict(TINY_MAMBA, max_positions=12), backbone_name="m"), data, tokenizer_json, str(tmp_path / "r"))
    with pytest.raises(DmlmError, match=r"backbones\.m\.dropout"):
        train_run(settings(backbone=dict(TINY_MAMBA, dropout=0.1), backbone_name="m"), data, tokenizer_json, str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_bad_settings_fail_before_any_work(tokenizer_json, data, tmp_path):
    out = tmp_path / "run"
    bad = settings(loss_weights=dict(WEIGHTS, ocr=-0.5))
    with pytest.raises(DmlmError, match=r"loss_weights\.paper\.ocr"):
        train_run(bad, data, tokenizer_json, str(out))
    with pytest.raises(DmlmError, match=r"backbones\.tiny\.family"):
        train_run(settings(backbone=dict(TINY, family="mamba9")), data, tokenizer_json, str(out))
    with pytest.raises(DmlmError, match=r"backbones\.tiny\.max_positions.*\d+ tokens"):
        train_run(settings(backbone=dict(TINY, max_positions=12)), data, tokenizer_json, str(out))
    bad = settings()
    bad["training"] = dict(bad["training"], batch_size=0)
    with pytest.raises(DmlmError, match=r"training\.batch_size"):
        train_run(bad, data, tokenizer_json, str(out))
    with pytest.raises(DmlmError, match=r"val:ocr is missing"):
        train_run(settings(), {"train": data["train"], "val": {"audio": data["val"]["audio"]}}, tokenizer_json, str(out))
    assert not out.exists()
    assert parse_streams(["train:audio=a/b=c", "val:transcript=t"]) == {
        "train": {"audio": "a/b=c"},
        "val": {"transcript": "t"},
    }
    with pytest.raises(DmlmError, match="SPLIT:NAME=PREFIX"):
        parse_streams(["train=audio"])
