"""`dmlm evaluate`: scores, per-utterance counts, speed, and the permuted (perceptual) evaluation
on a tiny model that has memorised 8 utterances from their audio."""

import json

import numpy as np
import pytest
import torch

from dmlm.cli import main
from dmlm.evaluation.permute import derangement
from dmlm.model.train import train_run
from dmlm.storage import Ragged, read_table, write_table
from test_model import TINY, WORDS, data, settings, tokenizer_json  # noqa: F401 (fixtures)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def memorised(tokenizer_json, data, tmp_path_factory):  # noqa: F811
    """Checkpoint of a model trained until it reads the transcript off the audio of 8 utterances,
    with their manifest (transcripts as words)."""
    eight = {"train": data["val"], "val": data["val"]}
    s = settings(backbone=dict(TINY, hidden=64, ffn=128))
    s["training"].update(max_steps=150, batch_size=8, lr=1e-2, warmup_steps=10, eval_every=150, val_batches=1)
    out = tmp_path_factory.mktemp("memorised")
    train_run(s, eight, tokenizer_json, str(out))
    words = [" ".join(WORDS[i] for i in t) for t in Ragged.load(data["val"]["transcript"])]
    write_table(out / "manifest.tsv", [{"id": f"u{i}", "transcript": w} for i, w in enumerate(words)])
    return out, words


def evaluate(memorised, data, tokenizer_json, out_dir, *extra):  # noqa: F811
    run, _ = memorised
    streams = [f"--stream={name}={prefix}" for name, prefix in data["val"].items()]
    code = main(["evaluate", "--settings", json.dumps({"batch_size": 4, "max_new_tokens": 12, "permutation_seed": 5}),
                 "--checkpoint", str(run / "checkpoint.pt"), *streams, "--tokenizer", tokenizer_json,
                 "--manifest", str(run / "manifest.tsv"), "--out-dir", str(out_dir), *extra])
    assert code == 0
    return json.loads((out_dir / "wer.json").read_text()), read_table(out_dir / "hyps.tsv")


def test_evaluation_and_its_speed(memorised, data, tokenizer_json, tmp_path):  # noqa: F811
    result, hyps = evaluate(memorised, data, tokenizer_json, tmp_path / "plain")
    _, words = memorised
    assert result["wer"] == 0.0 and list(hyps["hypothesis"]) == words
    assert result["utterances"] == 8 and result["permuted"] is None
    assert result["generated_tokens"] == sum(len(w.split()) for w in words)  # </s> not counted
    assert result["tokens_per_s"] == pytest.approx(result["generated_tokens"] / result["decode_seconds"])
    assert result["utterances_per_s"] == pytest.approx(8 / result["decode_seconds"])
    assert result["device"] == "cpu" and result["threads"] == 1
    read = sum(Ragged.load(data["val"][m]).lengths().sum() for m in ("audio", "ocr"))
    assert result["input_tokens"] == read
    assert result["input_tokens_per_s"] == pytest.approx(read / result["decode_seconds"])
    lengths = {name: Ragged.load(prefix).lengths().mean() for name, prefix in data["val"].items()}
    assert result["tokens_per_utterance"] == pytest.approx(lengths)
    assert list(hyps["ref_words"]) == [len(w.split()) for w in words] and hyps["substitutions"].sum() == 0


def test_permuted_audio_reads_another_utterance(memorised, data, tokenizer_json, tmp_path):  # noqa: F811
    """With the audio deranged, the memorising model mostly writes the transcript of the utterance
    whose audio it was given (transcript perm[i]); it also memorised the (random) OCR, which pulls
    some hypotheses elsewhere."""
    import jiwer

    result, hyps = evaluate(memorised, data, tokenizer_json, tmp_path / "perm-audio", "--permute", "audio")
    _, words = memorised
    perm = derangement(8, 5)
    source = [words[j] for j in perm]
    assert list(hyps["reference"]) == words
    assert sum(h == s for h, s in zip(hyps["hypothesis"], source)) >= 3
    assert jiwer.wer(source, list(hyps["hypothesis"])) < 0.6 * result["wer"]
    assert result["permuted"] == "audio" and result["permutation_seed"] == 5 and result["wer"] > 0.5


def test_the_audio_matters_more_than_the_random_ocr(memorised, data, tokenizer_json, tmp_path):  # noqa: F811
    # the OCR of these utterances is random (test_model.make_split); the audio spells the
    # transcript. Memorising 8 utterances, the model keys on both, so both scores are positive,
    # but permuting the audio costs more.
    audio, _ = evaluate(memorised, data, tokenizer_json, tmp_path / "perm-audio", "--permute", "audio")
    ocr, _ = evaluate(memorised, data, tokenizer_json, tmp_path / "perm-ocr", "--permute", "ocr")
    assert 0 < ocr["wer"] < audio["wer"]


def test_permute_rejects_a_modality_the_run_lacks(memorised, data, tokenizer_json, tmp_path, capsys):  # noqa: F811
    run, _ = memorised
    code = main(["evaluate", "--settings", json.dumps({"batch_size": 4, "max_new_tokens": 12, "permutation_seed": 0}),
                 "--checkpoint", str(run / "checkpoint.pt"), *[f"--stream={k}={v}" for k, v in data["val"].items()],
                 "--tokenizer", tokenizer_json, "--manifest", str(run / "manifest.tsv"),
                 "--out-dir", str(tmp_path / "x"), "--permute", "lips"])
    assert code == 2 and "reads only audio, ocr" in capsys.readouterr().err
    assert not (tmp_path / "x" / "wer.json").exists()
    np.testing.assert_array_equal(derangement(8, 0), derangement(8, 0))
