"""Greedy transcription: prompt ``<bos> [<m> ... </m>]... <text>``, then argmax over text ids and
``</s>`` until ``</s>`` (``layout.output_mask``: never ``<pad>`` or ``<bos>``).

Batches are left-padded (an attention mask hides the pads) with explicit position ids, so each row
sees exactly the positions 0, 1, ... it saw in training; the KV cache makes each new token one
small forward. Utterances are decoded in order of prompt length (little padding) and returned in
their original order.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from dmlm.errors import DmlmError
from dmlm.model.sequence import input_streams, prompt
from dmlm.model.vocab import VocabLayout


def _cache_kwarg(model) -> str:
    # transformers 5 renamed `past_key_values` to `cache` (the old name is deprecated)
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):
    return out.get("cache", None) if out.get("cache", None) is not None else out.get("past_key_values", None)


def greedy_decode(
    model,
    layout: VocabLayout,
    streams: Mapping[str, Sequence[np.ndarray]],
    batch_size: int,
    max_new_tokens: int,
    progress: bool = True,
) -> list[np.ndarray]:
    """Text-tokenizer ids (int32, ``</s>`` excluded) of the greedy transcript of each utterance.

    ``streams`` maps each modality of ``layout`` to a ragged array (or list) of its ids; other
    entries (e.g. ``transcript``) are ignored. At most ``max_new_tokens`` tokens are generated per
    utterance (``</s>`` counted), and never more than the backbone's ``max_position_embeddings``
    allows."""
    import torch
    from tqdm import tqdm

    names = input_streams(layout)  # the modalities, and token times for an interleaved layout
    for m in names:
        if m not in streams:
            raise DmlmError(f"no {m!r} stream given for decoding (the model uses {', '.join(names)})")
    counts = {len(streams[m]) for m in names}
    if len(counts) != 1:
        raise DmlmError(f"decoding streams disagree on the number of utterances: {counts}")
    n = counts.pop()
    if batch_size <= 0 or max_new_tokens <= 0:
        raise DmlmError(f"batch_size and max_new_tokens must be positive, got {batch_size}, {max_new_tokens}")
    prompts = [prompt({m: streams[m][i] for m in names}, layout) for i in range(n)]
    lengths = np.array([len(p) for p in prompts], dtype=np.int64)
    limit = int(model.config.max_position_embeddings)
    if n and lengths.max() >= limit:
        i = int(np.argmax(lengths))
        raise DmlmError(
            f"max_positions = {limit} of the model is too small: the prompt of utterance {i} has "
            f"{int(lengths[i])} tokens (prompts are not truncated)"
        )

    vocab = model.get_output_embeddings().weight.shape[0]
    if vocab != layout.vocab_size:
        raise DmlmError(f"the model has {vocab} output ids but its vocabulary layout {layout.vocab_size}")
    banned = ~torch.from_numpy(layout.output_mask())
    eos, pad = layout.eos, layout.pad
    cache_kw = _cache_kwarg(model)

    model.eval()
    results: list[np.ndarray | None] = [None] * n
    order = np.argsort(lengths, kind="stable")
    bar = tqdm(total=n, desc="decode", unit="utt", file=sys.stderr, disable=not progress, mininterval=2.0)
    with torch.no_grad():
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            rows, width = len(idx), int(lengths[idx].max())
            ids = torch.full((rows, width), pad, dtype=torch.long)
            mask = torch.zeros((rows, width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, width - lengths[i] :] = torch.from_numpy(prompts[i])
                mask[r, width - lengths[i] :] = 1
            positions = (mask.cumsum(1) - 1).clamp_min(0)
            cap = torch.from_numpy(np.minimum(max_new_tokens, limit - lengths[idx]))
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
            next_pos = positions[:, -1] + 1
            generated = torch.zeros((rows, int(cap.max())), dtype=torch.long)
            n_out = torch.zeros(rows, dtype=torch.long)  # tokens produced (</s> included)
            done = torch.zeros(rows, dtype=torch.bool)
            for t in range(int(cap.max())):
                logits = out.logits[:, -1].float().masked_fill(banned, float("-inf"))
                token = logits.argmax(-1)
                live = ~done
                generated[live, t] = token[live]
                n_out[live] += 1
                done |= (token == eos) | (n_out >= cap)
                if bool(done.all()):
                    break
                mask = torch.cat([mask, torch.ones((rows, 1), dtype=torch.long)], dim=1)
                out = model(
                    input_ids=token[:, None],
                    attention_mask=mask,
                    position_ids=next_pos.clamp_max(limit - 1)[:, None],
                    use_cache=True,
                    **{cache_kw: _cache_of(out)},
                )
                next_pos += 1
            for r, i in enumerate(idx):
                seq = generated[r, : n_out[r]].numpy()
                if len(seq) and seq[-1] == eos:
                    seq = seq[:-1]
                results[i] = layout.to_text(seq)
            bar.update(rows)
    bar.close()
    return results
