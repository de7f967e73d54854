"""Greedy transcription: prompt ``<bos> [<m> ... </m>]... <text>``, then argmax over text ids and
``</s>`` until ``</s>`` (``layout.output_mask``: never ``<pad>`` or ``<bos>``).

Batches are left-padded. OPT (a positional family): an attention mask hides the pads and explicit
position ids give each row exactly the positions 0, 1, ... it saw in training; the KV cache makes
each new token one small forward. Mamba: the mask zeroes the pads' inputs in the prompt pass, so the
recurrent state of every row starts from zero at its first real token, exactly as without padding;
each new token then updates the cached recurrent and convolution states (no mask needed). Either
way a row's transcript does not depend on the batch it is decoded in. A row that ends (its
``</s>`` or its token cap) leaves the batch and the cache at once, so later steps only compute
the rows still decoding; the attention mask is allocated once per batch. Utterances are decoded in
order of prompt length (little padding) and returned in their original order. The model decodes
on the device it is on.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from dmlm.errors import DmlmError
from dmlm.model.backbone import family_of, model_max_positions
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
    utterance (``</s>`` counted), and never more than the backbone's ``max_positions`` allows (no
    limit for a Mamba without one)."""
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
    limit = model_max_positions(model)
    positional = family_of(model).positional
    if limit is None:  # no position table: only max_new_tokens bounds the output
        limit = int(lengths.max(initial=0)) + max_new_tokens + 1
    if n and lengths.max() >= limit:
        i = int(np.argmax(lengths))
        raise DmlmError(
            f"max_positions = {limit} of the model is too small: the prompt of utterance {i} has "
            f"{int(lengths[i])} tokens (prompts are not truncated)"
        )

    vocab = model.get_output_embeddings().weight.shape[0]
    if vocab != layout.vocab_size:
        raise DmlmError(f"the model has {vocab} output ids but its vocabulary layout {layout.vocab_size}")
    device = next(model.parameters()).device
    # argmax over the allowed ids only (index order kept: ties go to the lowest id, as over the full row)
    allowed = torch.from_numpy(np.flatnonzero(layout.output_mask())).to(device)
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
            caps = np.minimum(max_new_tokens, limit - lengths[idx])
            steps = int(caps.max())
            ids = torch.full((rows, width), pad, dtype=torch.long)
            # the attention mask of the whole decode, allocated once: step t reads its first width + t + 1 columns
            mask = torch.ones((rows, width + steps), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, width - lengths[i] :] = torch.from_numpy(prompts[i])
                mask[r, : width - lengths[i]] = 0
            ids, mask = ids.to(device), mask.to(device)
            positions = (mask[:, :width].cumsum(1) - 1).clamp_min(0)
            cap = torch.from_numpy(caps).to(device)
            extra = {"position_ids": positions} if positional else {}
            out = model(input_ids=ids, attention_mask=mask[:, :width], use_cache=True, logits_to_keep=1, **extra)
            cache = _cache_of(out)
            next_pos = positions[:, -1] + 1
            generated = torch.zeros((rows, steps), dtype=torch.long, device=device)
            n_out = torch.zeros(rows, dtype=torch.long, device=device)  # tokens produced (</s> included)
            live = torch.arange(rows, device=device)  # the batch rows still decoding, in cache order
            for t in range(steps):
                token = allowed[out.logits[:, -1].index_select(-1, allowed).argmax(-1)]
                generated[live, t] = token
                n_out[live] += 1
                going = (token != eos) & (n_out[live] < cap[live])
                if not bool(going.all()):  # drop finished rows from the batch and the cache
                    keep = going.nonzero().squeeze(1)
                    if not len(keep):
                        break
                    live, token, next_pos, mask = live[keep], token[keep], next_pos[keep], mask[keep]
                    cache.reorder_cache(keep)
                if positional:
                    extra = {"attention_mask": mask[:, : width + t + 1], "position_ids": next_pos.clamp_max(limit - 1)[:, None]}
                out = model(input_ids=token[:, None], use_cache=True, **extra, **{cache_kw: cache})
                cache = _cache_of(out)
                next_pos += 1
            generated, n_out = generated.cpu(), n_out.cpu()
            for r, i in enumerate(idx):
                seq = generated[r, : n_out[r]].numpy()
                if len(seq) and seq[-1] == eos:
                    seq = seq[:-1]
                results[i] = layout.to_text(seq)
            bar.update(rows)
    bar.close()
    return results
