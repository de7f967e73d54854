"""A pretrained backbone reads text with its own tokenizer, in its native ids (a tiny OPT built here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dmlm.errors import DmlmError
from dmlm.evaluation.wer import evaluate_run
from dmlm.model import checkpoint
from dmlm.model import train as train_module
from dmlm.model.backbone import vocab_layout
from dmlm.model.decode import greedy_decode
from dmlm.model.sequence import assemble
from dmlm.model.train import train_run
from dmlm.model.vocab import VocabLayout
from dmlm.storage import Ragged, save_ragged, write_table
from dmlm.tokens.text import copy_pretrained_tokenizer, decode, encode_texts

ROOT = Path(__file__).resolve().parents[1]
CODEBOOKS = {"audio": 16, "lips": 8, "image": 8}
WEIGHTS = {"audio": 0.3, "lips": 0.5, "image": 0.5, "ocr": 0.5, "transcript": 1.0}
WORDS = ["3", "x", "plus", "5", "equals", "12", "seven", "minus", "y", "two", "divided", "by", "times"]
OPT_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # OPT's ids 0..3; pad 1, bos = eos = 2
EXTRA_ROWS = 5  # like OPT-125M (50272 embeddings, 50265 tokens): more embedding rows than tokens


def transcripts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(3, 7))) for _ in range(n)]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A save_pretrained folder: a tiny OPTForCausalLM and its byte-level BPE tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import OPTConfig, OPTForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-opt")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=OPT_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(transcripts(200, 0), trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(str(folder))
    n_tokens = tok.get_vocab_size()
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=n_tokens + EXTRA_ROWS, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       ffn_dim=64, max_position_embeddings=128, word_embed_proj_dim=32, dropout=0.0,
                       pad_token_id=1, bos_token_id=2, eos_token_id=2)
    OPTForCausalLM(config).save_pretrained(str(folder))
    return {"folder": folder, "tokenizer": folder / "tokenizer.json", "n_tokens": n_tokens,
            "embeddings": n_tokens + EXTRA_ROWS, "backbone": {"family": "opt", "pretrained": str(folder)}}


def test_native_layout_keeps_the_pretrained_ids(pretrained):
    n_emb, n_tok = pretrained["embeddings"], pretrained["n_tokens"]
    layout = vocab_layout(pretrained["backbone"], ["audio", "ocr"], CODEBOOKS, pretrained["tokenizer"], "tiny-pre")
    assert layout.is_native and layout.text_range == (0, n_tok)
    assert (layout.pad, layout.bos, layout.eos) == (1, 2, 2)  # the model's own
    # appended after every pretrained row: <text>, the 4 modality pairs, then the codebooks
    assert layout.text_tag == n_emb and (layout.begin("audio"), layout.end("ocr")) == (n_emb + 1, n_emb + 8)
    assert layout.offsets["audio"] == n_emb + 9 and layout.vocab_size == n_emb + 9 + 32
    text = encode_texts(pretrained["tokenizer"], ["3 x plus 5 equals 12"])[0]
    assert layout.to_lm("transcript", text).tolist() == text.tolist()  # unshifted
    ids, _ = assemble({"audio": np.array([0, 5]), "ocr": text[:2], "transcript": text}, layout, WEIGHTS)
    a, o = layout.offsets["audio"], n_emb + 7
    assert ids.tolist() == [2, n_emb + 1, a, a + 5, n_emb + 2, o, *text[:2], o + 1, n_emb, *text, 2]
    allowed = layout.output_mask()
    assert allowed[2] and not allowed[1] and allowed[text].all() and not allowed[n_tok:].any()
    again = VocabLayout.from_dict(json.loads(json.dumps(layout.to_dict())))
    assert (again.specials, again.offsets, again.vocab_size) == (layout.specials, layout.offsets, layout.vocab_size)


def test_pretrained_tokenizer_decodes_to_the_words(pretrained, tmp_path):
    import dmlm.cli

    refs = transcripts(20, 5) + ["twelve divided by x"]  # "twelve": not a training word
    out = tmp_path / "tokenizer.json"
    settings = json.dumps({"backbone": "tiny-pre", "pretrained": str(pretrained["folder"])})
    assert dmlm.cli.main(["text-tokenizer", "--out", str(out), "--settings", settings]) == 0
    assert out.read_bytes() == pretrained["tokenizer"].read_bytes()
    ids = encode_texts(out, refs)
    assert all(len(i) < len(r) for i, r in zip(ids, refs))  # subwords, no special tokens added
    assert [decode(out, i) for i in ids] == refs
    assert decode(out, [2, *ids[0], 1]) == refs[0]  # its special tokens are skipped
    assert decode(out, encode_texts(out, ["  3  x plus\t5 "])[0]) == "3 x plus 5"  # whitespace normalised
    with pytest.raises(DmlmError, match=r"backbones\.tiny-pre\.pretrained: .*no tokenizer\.json"):
        copy_pretrained_tokenizer(tmp_path / "nowhere", tmp_path / "t.json", "tiny-pre")


def make_split(folder: Path, tokenizer, n: int, seed: int) -> dict[str, str]:
    """Audio that spells the transcript's subword ids (learnable), OCR = the first text tokens."""
    texts = encode_texts(tokenizer, transcripts(n, seed))
    audio = [np.concatenate([[(3 * t) % 16, (3 * t + 1) % 16] for t in ids]) for ids in texts]
    prefixes = {}
    for name, items in (("audio", audio), ("ocr", [t[:2] for t in texts]), ("transcript", texts)):
        prefixes[name] = str(folder / name)
        save_ragged(prefixes[name], items, dtype=np.int32)
    return prefixes


def test_training_from_the_pretrained_folder(pretrained, tmp_path, monkeypatch):
    from transformers import OPTForCausalLM

    eight = make_split(tmp_path, pretrained["tokenizer"], 8, 1)
    built = []
    build = train_module.backbones.build_backbone

    def spy(*args, **kwargs):  # the model training starts from, before any step
        model = build(*args, **kwargs)
        built.append(model.get_input_embeddings().weight.detach().clone())
        return model

    monkeypatch.setattr(train_module.backbones, "build_backbone", spy)
    settings = {
        "modalities": ["audio", "ocr"], "vocab": dict(CODEBOOKS), "backbone": pretrained["backbone"],
        "backbone_name": "tiny-pre", "loss_weights": dict(WEIGHTS), "seed": 3,
        "training": {"max_steps": 150, "batch_size": 8, "lr": 1e-2, "min_lr_ratio": 0.1, "warmup_steps": 10,
                     "weight_decay": 0.0, "grad_clip": 1.0, "eval_every": 150, "val_batches": 1},
    }
    last = train_run(settings, {"train": eight, "val": eight}, str(pretrained["tokenizer"]), str(tmp_path / "run"))

    saved = OPTForCausalLM.from_pretrained(str(pretrained["folder"])).get_input_embeddings().weight
    n_emb = pretrained["embeddings"]
    assert len(built) == 1 and built[0].shape[0] == n_emb + 9 + 32
    assert torch.equal(built[0][:n_emb], saved)  # every pretrained row starts unchanged

    first = pd.read_csv(tmp_path / "run" / "train_log.tsv", sep="\t")["val_loss"].iloc[0]
    assert last["val_loss"] < 0.5 * first  # the fixed batch of 8 is overfitted

    model, layout, _ = checkpoint.load(tmp_path / "run" / "checkpoint.pt")
    assert layout.is_native and layout.text_range == (0, pretrained["n_tokens"]) and layout.eos == 2
    assert model.get_input_embeddings().weight.shape[0] == layout.vocab_size
    streams = {k: Ragged.load(p) for k, p in eight.items()}
    hyps = greedy_decode(model, layout, streams, batch_size=8, max_new_tokens=20, progress=False)
    words = [decode(pretrained["tokenizer"], h) for h in hyps]
    assert words == transcripts(8, 1)
    # evaluation scores the pretrained tokenizer's decoding against the manifest's transcripts
    write_table(tmp_path / "manifest.tsv", [{"id": f"test-{i}", "transcript": t} for i, t in enumerate(words)])
    result = evaluate_run(tmp_path / "run" / "checkpoint.pt", {"audio": eight["audio"], "ocr": eight["ocr"]},
                          pretrained["tokenizer"], tmp_path / "manifest.tsv", tmp_path / "eval",
                          {"batch_size": 4, "max_new_tokens": 20})
    assert result["wer"] == 0.0 and result["ref_words"] == sum(len(t.split()) for t in words)


def test_config_needs_the_backbones_tokenizer(pretrained, tmp_path):
    from dmlm import grid
    from dmlm.config import validate_config

    config = yaml.safe_load((ROOT / "presets" / "tiny.yaml").read_text())
    assert grid.text_encoders(config) == ["local"]
    config["backbones"]["opt-tiny"]["pretrained"] = str(pretrained["folder"])
    validate_config(config)
    assert grid.text_encoders(config) == ["opt-tiny"]
    assert grid.run_text_encoder(config, grid.runs_table(config)["run"][0]) == "opt-tiny"
    (tmp_path / "config.json").write_text((pretrained["folder"] / "config.json").read_text())
    config["backbones"]["opt-tiny"]["pretrained"] = str(tmp_path)
    with pytest.raises(DmlmError, match=r"backbones\.opt-tiny\.pretrained: .* has no tokenizer\.json"):
        validate_config(config)


def dry_run(config: dict, tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-n", "--directory", str(tmp_path / "work"), "--snakefile",
           str(ROOT / "Snakefile"), "--configfile", str(path), "--replace-workflow-config"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_dry_run_plans_the_backbones_text_tokenizer(pretrained, tmp_path):
    config = yaml.safe_load((ROOT / "presets" / "tiny.yaml").read_text())
    config["backbones"]["opt-pre"] = {**config["backbones"]["opt-tiny"], "pretrained": str(pretrained["folder"])}
    config["studies"]["tiny"]["backbone"] = ["opt-tiny", "opt-pre"]
    out = dry_run(config, tmp_path)
    dataset = config["corpus"]["dataset"]
    for textenc in ("local", "opt-pre"):
        assert f"results/tokens/{dataset}/text/{textenc}/tokenizer.json" in out
        for field in ("transcript", "ocr"):
            for split in ("train", "val", "test"):
                assert f"results/tokens/{dataset}/{field}/{textenc}/{split}.npy" in out
    assert str(pretrained["tokenizer"]) in out  # the pretrained rule reads the folder's file
    assert f"results/tokens/{dataset}/text/opt-tiny/" not in out
    stats = out.split("Job stats:")[1]
    assert [line.split() for line in stats.splitlines() if line.startswith("text_tokenizer")] == [
        ["text_tokenizer", "2"]
    ]
