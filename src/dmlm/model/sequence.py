"""One utterance's streams -> one LM sequence with a loss weight per target position.

**Order and layout.** ``layout.modalities`` is the sequence order (the grid resolves the study axis
``order``, e.g. audio first, into it). With ``layout.arrangement == "blocked"`` (the paper's
default) every modality is one block::

    <bos> [<m> tokens of m </m> for m in layout.modalities] <text> transcript </s>

With ``"interleaved"``, the *synchronized* modalities (``SYNCHRONIZED``: audio and lips, which share
the utterance's time line) form one block at the place of the first of them in the order; their
tokens are merged by start time (the tokenizers' ``<prefix>.times``; ties go to the modality
earlier in the order, then to the earlier token), between their begin tokens in order and their end
tokens in reverse order. The unsynchronized modalities (image, OCR) stay blocks where the order puts
them. E.g. order lips, image, audio, interleaved::

    <bos> <lips> <audio> l0 a0 a1 l1 a2 ... </audio> </lips> <image> ... </image> <text> ... </s>

With fewer than two synchronized modalities the interleaved layout equals the blocked one. Either
layout has the same length: ``prompt_length`` and ``sequence_length`` hold for both.

**Loss weights.** ``weights[i]`` is the weight of predicting ``input_ids[i]`` (from positions
``< i``); position 0 (``<bos>``) is never predicted and weighs 0. Every other position belongs to a
group: a modality (its tokens and its own ``<m>``/``</m>``) or ``transcript`` (``<text>``, the
transcript and ``</s>``). Variant ``weighted`` (the paper's: lambda_S = 0.3, ...): a position of
group g weighs ``loss_weights[g]``. Variant ``balanced`` (the token-count balancing of the earlier
DMLM paper, Trinh et al. 2024, our reading of its length-normalised loss): it weighs
``loss_weights[g] / n_g``, with ``n_g`` the number of positions of group g *in this sequence*. The
training loss ``sum(w * CE) / sum(w)`` over a batch of B sequences (each with the same groups) is
then ``(1/B) sum_b sum_g (lambda_g / sum_h lambda_h) * mean CE of group g in sequence b``: every
group counts by its weight, not by its length (audio has many times the transcript's tokens), and
the normalisation is per sequence, so a sequence's loss does not depend on which batch it is in
and the training loop needs no change.

**Over-length policy** (``sequence.over_length``; ``check_lengths``): a sequence longer than the
backbone's ``max_positions`` is an error (``error``, the default), raised over all train and
validation data before training starts; or (``drop``) those train and validation utterances are
left out, their count printed to the training log. Test prompts are never dropped or truncated: the
decoder raises for a prompt that does not fit. Nothing is truncated silently.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping

import numpy as np

from dmlm.errors import DmlmError
from dmlm.model.vocab import ARRANGEMENTS, VocabLayout

LAYOUTS = ARRANGEMENTS
#: modalities on the utterance's time line (their tokenizers write token times)
SYNCHRONIZED = ("audio", "lips")
LOSS_VARIANTS = ("weighted", "balanced")
OVER_LENGTH = ("error", "drop")
TIMES = ".times"  # a timed modality's times stream is named "<modality>.times"


def times_stream(modality: str) -> str:
    return modality + TIMES


@dataclasses.dataclass(frozen=True)
class SequenceSettings:
    """The run's ``sequence`` settings: ``layout`` (study axis) and ``over_length`` (config)."""

    layout: str = "blocked"
    over_length: str = "error"

    @classmethod
    def from_settings(cls, settings: Mapping | None) -> "SequenceSettings":
        settings = dict(settings or {})
        for key in settings:
            if key not in ("layout", "over_length"):
                raise DmlmError(f"sequence.{key}: unknown key (known: layout, over_length)")
        out = cls(**settings)
        if out.layout not in LAYOUTS:
            raise DmlmError(f"sequence.layout: unknown layout {out.layout!r} (known: {', '.join(LAYOUTS)})")
        if out.over_length not in OVER_LENGTH:
            raise DmlmError(
                f"sequence.over_length: unknown policy {out.over_length!r} (known: {', '.join(OVER_LENGTH)})"
            )
        return out


def arranged(layout: VocabLayout, arrangement: str) -> VocabLayout:
    """``layout`` with its sequence arrangement set (the vocabulary is unchanged)."""
    return dataclasses.replace(layout, arrangement=arrangement)


def loss_variant(loss_weights: Mapping, set_name: str = "<set>") -> str:
    """The ``variant`` of a loss-weight set (default ``weighted``)."""
    variant = loss_weights.get("variant", "weighted")
    if variant not in LOSS_VARIANTS:
        raise DmlmError(
            f"loss_weights.{set_name}.variant: unknown variant {variant!r} (known: {', '.join(LOSS_VARIANTS)})"
        )
    return variant


def blocks(layout: VocabLayout) -> list[tuple[str, ...]]:
    """The sequence's blocks in order: one modality each, or the interleaved synchronized ones."""
    sync = [m for m in layout.modalities if m in SYNCHRONIZED]
    if layout.arrangement != "interleaved" or len(sync) < 2:
        return [(m,) for m in layout.modalities]
    out = []
    for m in layout.modalities:
        if m not in sync:
            out.append((m,))
        elif m == sync[0]:
            out.append(tuple(sync))
    return out


def input_streams(layout: VocabLayout) -> list[str]:
    """Names of the streams a prompt reads: the modalities, and the times of interleaved ones."""
    timed = [times_stream(m) for block in blocks(layout) if len(block) > 1 for m in block]
    return [*layout.modalities, *timed]


def _stream(streams: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in streams:
        raise DmlmError(f"no {name!r} stream given (the sequence reads {name})")
    return streams[name]


def _interleave(block, streams, layout):
    """Merged LM ids and their modalities of one interleaved block (tags excluded)."""
    ids, owners, times, ranks = [], [], [], []
    for rank, m in enumerate(block):
        body = layout.to_lm(m, _stream(streams, m))
        t = np.asarray(_stream(streams, times_stream(m)), dtype=np.float64)
        if len(t) != len(body):
            raise DmlmError(f"{times_stream(m)} holds {len(t)} times for {len(body)} {m} tokens")
        ids.append(body)
        owners += [m] * len(body)
        times.append(t)
        ranks.append(np.full(len(body), rank))
    ids, times, ranks = np.concatenate(ids), np.concatenate(times), np.concatenate(ranks)
    # by time, then by the modality's place in the order, then by the token's place in its stream
    merged = np.lexsort((np.arange(len(ids)), ranks, times))
    return ids[merged], [owners[i] for i in merged]


def _prompt(streams: Mapping[str, np.ndarray], layout: VocabLayout) -> tuple[np.ndarray, list]:
    """Prompt ids and the group of each position (None for ``<bos>``)."""
    ids, owners = [layout.bos], [None]
    for block in blocks(layout):
        if len(block) == 1:
            m = block[0]
            body = layout.to_lm(m, _stream(streams, m))
            ids += [layout.begin(m), *body.tolist(), layout.end(m)]
            owners += [m] * (len(body) + 2)
            continue
        body, body_owners = _interleave(block, streams, layout)
        ends = list(reversed(block))
        ids += [*(layout.begin(m) for m in block), *body.tolist(), *(layout.end(m) for m in ends)]
        owners += [*block, *body_owners, *ends]
    ids.append(layout.text_tag)
    owners.append("transcript")
    return np.array(ids, dtype=np.int64), owners


def position_weights(owners: list, loss_weights: Mapping[str, float], variant: str = "weighted") -> np.ndarray:
    """float32 weight of every position from its group (see the module docstring)."""
    if variant not in LOSS_VARIANTS:
        raise DmlmError(f"loss weight variant: unknown {variant!r} (known: {', '.join(LOSS_VARIANTS)})")
    groups = np.array([o or "" for o in owners])
    w = np.zeros(len(owners), dtype=np.float64)
    for g in dict.fromkeys(o for o in owners if o is not None):
        at = groups == g
        w[at] = float(loss_weights[g]) / (at.sum() if variant == "balanced" else 1)
    return w.astype(np.float32)


def assemble_groups(streams: Mapping[str, np.ndarray], layout: VocabLayout) -> tuple[np.ndarray, list]:
    """(input_ids int64, the group of every position: None for ``<bos>``) of one utterance."""
    body = layout.to_lm("transcript", _stream(streams, "transcript"))
    ids, owners = _prompt(streams, layout)
    ids = np.concatenate([ids, body, [layout.eos]]).astype(np.int64)
    return ids, owners + ["transcript"] * (len(body) + 1)


def assemble(
    streams: Mapping[str, np.ndarray],
    layout: VocabLayout,
    loss_weights: Mapping[str, float],
    variant: str = "weighted",
) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids int64, target_weights float32) of one utterance; ``streams`` holds one id array per
    modality of the layout, ``"transcript"`` (text tokenizer ids) and, for an interleaved block, the
    token times ``"<m>.times"`` of its modalities."""
    ids, owners = assemble_groups(streams, layout)
    return ids, position_weights(owners, loss_weights, variant)


def prompt(streams: Mapping[str, np.ndarray], layout: VocabLayout) -> np.ndarray:
    """The decoding prompt: the assembled sequence up to and including ``<text>``."""
    return _prompt(streams, layout)[0]


def prompt_length(stream_lengths: Mapping[str, int | np.ndarray], layout: VocabLayout):
    """Length of the prompt from the modality stream lengths (works on arrays of lengths)."""
    return 2 + sum(stream_lengths[m] + 2 for m in layout.modalities)


def sequence_length(stream_lengths: Mapping[str, int | np.ndarray], layout: VocabLayout):
    """Length of the assembled sequence from the stream lengths (works on arrays of lengths)."""
    return prompt_length(stream_lengths, layout) + stream_lengths["transcript"] + 1


def check_lengths(
    lengths: np.ndarray, max_positions: int, backbone_name: str, what: str, policy: str = "error"
) -> np.ndarray:
    """Apply the over-length policy: a bool mask of the sequences to keep (all of them when none is
    longer than ``max_positions``). ``error`` raises naming both keys; ``drop`` keeps the others and
    says how many it left out (stderr: the training log)."""
    lengths = np.asarray(lengths)
    if policy not in OVER_LENGTH:
        raise DmlmError(f"sequence.over_length: unknown policy {policy!r} (known: {', '.join(OVER_LENGTH)})")
    keep = lengths <= max_positions
    if keep.all():
        return keep
    i = int(np.argmax(lengths))
    n_over = int((~keep).sum())
    if policy == "error" or not keep.any():
        remedy = "set sequence.over_length: drop to leave them out" if policy == "error" else "none would be left"
        raise DmlmError(
            f"backbones.{backbone_name}.max_positions = {max_positions} is too small: utterance {i} of "
            f"{what} assembles to {int(lengths[i])} tokens ({n_over} of {len(lengths)} utterance(s) too long; "
            f"sequence.over_length = {policy}); raise max_positions, or {remedy} (sequences are never truncated)"
        )
    print(
        f"dmlm train: sequence.over_length = drop: left out {n_over} of {len(lengths)} utterances of {what} "
        f"longer than backbones.{backbone_name}.max_positions = {max_positions} (longest {int(lengths[i])})",
        file=sys.stderr,
    )
    return keep
