"""Evaluation of one run at one test condition: greedy transcripts of the test split, and WER.

WER (corpus level, jiwer): ``(S + D + I) / N`` where S, D, I are the substitutions, deletions and
insertions of the minimum-edit word alignment of each hypothesis to its reference, summed over
the test set, and N is the number of reference words.
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


def evaluate_run(
    checkpoint: str | Path,
    streams: dict[str, str],
    tokenizer_json: str | Path,
    manifest: str | Path,
    out_dir: str | Path,
    settings: dict,
) -> dict:
    """Decode the test split (``streams``: modality -> token prefix) and score it.

    Hypotheses are the run's text tokenizer's decoding (``dmlm.tokens.text.decode``: words joined
    by spaces, or a subword tokenizer's string, whitespace-normalised); references are the
    manifest's transcripts as they are.

    Writes ``hyps.tsv`` (id, reference, hypothesis, utterance WER) and ``wer.json`` (corpus WER,
    error counts, decoding speed) into ``out_dir``; returns the ``wer.json`` content.
    """
    from dmlm.model.checkpoint import load
    from dmlm.model.decode import greedy_decode
    from dmlm.tokens.text import decode, load_tokenizer

    model, layout, _ = load(checkpoint)
    inputs = {name: Ragged.load(prefix) for name, prefix in streams.items() if name != "transcript"}
    missing = [m for m in layout.modalities if m not in inputs]
    if missing:
        raise DmlmError(f"{checkpoint} was trained on {missing} but no test tokens were given for them")
    table = read_table(manifest)
    sizes = {name: len(r) for name, r in inputs.items()}
    if any(n != len(table) for n in sizes.values()):
        raise DmlmError(f"{manifest} has {len(table)} utterances but the token arrays have {sizes}")

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
    result.update(
        decode_seconds=seconds,
        utterances_per_s=len(references) / seconds if seconds else float("nan"),
        generated_tokens=int(sum(len(ids) for ids in decoded)),
    )
    write_json(Path(out_dir) / "wer.json", result)
    return result


def _rows(ids, references, hypotheses):
    for id_, ref, hyp in zip(ids, references, hypotheses):
        yield {"id": id_, "reference": ref, "hypothesis": hyp, "wer": utterance_wer(ref, hyp)}
