"""One utterance's streams -> one LM sequence with a loss weight per target position.

    <bos> [<m> tokens of m </m> for m in layout.modalities] <text> transcript </s>

``weights[i]`` is the weight of predicting ``input_ids[i]`` (from positions ``< i``); position 0
(``<bos>``) is never predicted and weighs 0. Tokens of modality m, its ``<m>``/``</m>`` included,
weigh ``loss_weights[m]``; ``<text>``, the transcript and ``</s>`` weigh
``loss_weights["transcript"]``. The ids of the special tokens come from the layout (local or
native, see ``dmlm.model.vocab``).

Length policy: a sequence longer than the backbone's ``max_positions`` is an error, raised by
``check_lengths`` over all train and validation data before training starts (and by the decoder
for a prompt that does not fit). Nothing is truncated silently.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dmlm.errors import DmlmError
from dmlm.model.vocab import VocabLayout


def _pieces(streams: Mapping[str, np.ndarray], layout: VocabLayout, loss_weights: Mapping[str, float] | None):
    ids = [np.array([layout.bos], dtype=np.int64)]
    weights = [np.zeros(1, dtype=np.float32)]
    for m in layout.modalities:
        if m not in streams:
            raise DmlmError(f"no {m!r} stream given for modality {m!r}")
        body = layout.to_lm(m, streams[m])
        ids.append(np.concatenate([[layout.begin(m)], body, [layout.end(m)]]).astype(np.int64))
        if loss_weights is not None:
            weights.append(np.full(len(body) + 2, loss_weights[m], dtype=np.float32))
    ids.append(np.array([layout.text_tag], dtype=np.int64))
    if loss_weights is not None:
        weights.append(np.full(1, loss_weights["transcript"], dtype=np.float32))
    return ids, weights


def assemble(
    streams: Mapping[str, np.ndarray], layout: VocabLayout, loss_weights: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids int64, target_weights float32) of one utterance; ``streams`` holds one id array per
    modality of the layout and ``"transcript"`` (text tokenizer ids)."""
    if "transcript" not in streams:
        raise DmlmError("no 'transcript' stream given")
    ids, weights = _pieces(streams, layout, loss_weights)
    body = layout.to_lm("transcript", streams["transcript"])
    ids.append(np.concatenate([body, [layout.eos]]).astype(np.int64))
    weights.append(np.full(len(body) + 1, loss_weights["transcript"], dtype=np.float32))
    return np.concatenate(ids), np.concatenate(weights)


def prompt(streams: Mapping[str, np.ndarray], layout: VocabLayout) -> np.ndarray:
    """The decoding prompt: the assembled sequence up to and including ``<text>``."""
    ids, _ = _pieces(streams, layout, None)
    return np.concatenate(ids)


def prompt_length(stream_lengths: Mapping[str, int | np.ndarray], layout: VocabLayout):
    """Length of the prompt from the modality stream lengths (works on arrays of lengths)."""
    return 2 + sum(stream_lengths[m] + 2 for m in layout.modalities)


def sequence_length(stream_lengths: Mapping[str, int | np.ndarray], layout: VocabLayout):
    """Length of the assembled sequence from the stream lengths (works on arrays of lengths)."""
    return prompt_length(stream_lengths, layout) + stream_lengths["transcript"] + 1


def check_lengths(lengths: np.ndarray, max_positions: int, backbone_name: str, what: str) -> None:
    """Raise if any sequence is longer than the backbone's ``max_positions`` (the documented policy:
    no silent truncation; raise ``max_positions`` or shorten the inputs)."""
    lengths = np.asarray(lengths)
    if len(lengths) and lengths.max() > max_positions:
        i = int(np.argmax(lengths))
        n_over = int((lengths > max_positions).sum())
        raise DmlmError(
            f"backbones.{backbone_name}.max_positions = {max_positions} is too small: utterance {i} of "
            f"{what} assembles to {int(lengths[i])} tokens ({n_over} utterance(s) too long); "
            f"raise max_positions (sequences are not truncated)"
        )
