"""Evaluation of one run at one test condition: greedy transcripts of the test split, and WER.

WER (corpus level, jiwer): ``(S + D + I) / N`` where S, D, I are the substitutions, deletions and
insertions of the minimum-edit word alignment of each hypothesis to its reference, summed over
the test set, and N is the number of reference words.

Speed: the wall-clock seconds of greedy decoding alone (model forward passes, not loading or
scoring), as utterances per second, generated (transcript) tokens per second and input (modality)
tokens read per second, on the device and thread count recorded beside them, so backbones compare
on the same machine.

Perceptual evaluation (``permute``): the same decoding with one modality's inputs permuted across
the test utterances by a seeded derangement (``dmlm.evaluation.permute``).
"""

from __future__ import annotations

import time
from pathlib import Path

import jiwer

from dmlm.errors import DmlmError
from dmlm.storage import Ragged, read_table, write_json, write_table


def corpus_wer(references: list[str], hypotheses: list[str]) -> dict:
    """Corpus WER with its error counts (jiwer.process_words over all utterances at once)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references or not any(r.strip() for r in references):
        raise DmlmError("WER needs at least one non-empty reference")
    out = jiwer.process_words(references, hypotheses)
    n_words = out.hits + out.substitutions + out.deletions
    return {
        "wer": out.wer,
        "substitutions": out.substitutions,
        "deletions": out.deletions,
        "insertions": out.insertions,
        "ref_words": n_words,
        "utterances": len(references),
    }


def utterance_wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(reference, hypothesis) if reference.strip() else float(bool(hypothesis.strip()))


def utterance_counts(reference: str, hypothesis: str) -> dict:
    """Error counts of one utterance; summed over a test set they give ``corpus_wer``'s counts
    (jiwer aligns each sentence on its own), which is what the bootstrap resamples."""
    out = jiwer.process_words(reference, hypothesis)
    return {
        "substitutions": out.substitutions,
        "deletions": out.deletions,
        "insertions": out.insertions,
        "ref_words": out.hits + out.substitutions + out.deletions,
    }


def evaluate_run(
    checkpoint: str | Path,
    streams: dict[str, str],
    tokenizer_json: str | Path,
    manifest: str | Path,
    out_dir: str | Path,
    settings: dict,
    permute: str | None = None,
) -> dict:
    """Decode the test split (``streams``: modality -> token prefix) and score it.

    ``permute``: a modality of the run whose inputs are permuted across the test utterances
    (derangement seeded by ``settings["permutation_seed"]``) for the perceptual score.

    Hypotheses are the run's text tokenizer's decoding (``dmlm.tokens.text.decode``: words joined
    by spaces, or a subword tokenizer's string, whitespace-normalised); references are the
    manifest's transcripts as they are.

    Writes ``hyps.tsv`` (id, reference, hypothesis, utterance WER) and ``wer.json`` (corpus WER,
    error counts, decoding speed, mean tokens per utterance of each stream) into ``out_dir``;
    returns the ``wer.json`` content.
    """
    import torch

    from dmlm.evaluation.permute import derangement, permuted
    from dmlm.model.checkpoint import load
    from dmlm.model.decode import greedy_decode
    from dmlm.tokens.text import decode, load_tokenizer

    model, layout, _ = load(checkpoint)
    if permute is not None and permute not in layout.modalities:
        raise DmlmError(f"--permute {permute}: {checkpoint} reads only {', '.join(layout.modalities)}")
    loaded = {name: Ragged.load(prefix) for name, prefix in streams.items()}
    inputs = {name: r for name, r in loaded.items() if name != "transcript"}
    missing = [m for m in layout.modalities if m not in inputs]
    if missing:
        raise DmlmError(f"{checkpoint} was trained on {missing} but no test tokens were given for them")
    table = read_table(manifest)
    sizes = {name: len(r) for name, r in loaded.items()}
    if any(n != len(table) for n in sizes.values()):
        raise DmlmError(f"{manifest} has {len(table)} utterances but the token arrays have {sizes}")
    # the share of each stream in the sequence ("sequence noise"), before any permutation
    tokens_per_utterance = {name: float(r.lengths().mean()) for name, r in loaded.items()}
    permutation = None
    if permute is not None:
        permutation = derangement(len(table), int(settings["permutation_seed"]))
        inputs[permute] = permuted(inputs[permute], permutation)

    tokenizer = load_tokenizer(tokenizer_json)
    start = time.perf_counter()
    decoded = greedy_decode(
        model, layout, inputs, batch_size=settings["batch_size"], max_new_tokens=settings["max_new_tokens"]
    )
    seconds = time.perf_counter() - start
    hypotheses = [decode(tokenizer, ids) for ids in decoded]
    references = list(table["transcript"])

    write_table(Path(out_dir) / "hyps.tsv", _rows(table["id"], references, hypotheses))
    result = corpus_wer(references, hypotheses)
    generated = int(sum(len(ids) for ids in decoded))
    # the prompt's modality tokens (block markers aside): what a backbone reads before writing
    read = int(sum(int(loaded[m].lengths().sum()) for m in layout.modalities))
    result.update(
        decode_seconds=seconds,
        utterances_per_s=len(references) / seconds if seconds else float("nan"),
        generated_tokens=generated,
        tokens_per_s=generated / seconds if seconds else float("nan"),
        input_tokens=read,
        input_tokens_per_s=read / seconds if seconds else float("nan"),
        device=str(next(model.parameters()).device),
        threads=torch.get_num_threads(),
        tokens_per_utterance=tokens_per_utterance,
        permuted=permute,
    )
    if permutation is not None:
        result["permutation_seed"] = int(settings["permutation_seed"])
    write_json(Path(out_dir) / "wer.json", result)
    return result


def _rows(ids, references, hypotheses):
    for id_, ref, hyp in zip(ids, references, hypotheses):
        yield {"id": id_, "reference": ref, "hypothesis": hyp, "wer": utterance_wer(ref, hyp),
               **utterance_counts(ref, hyp)}
