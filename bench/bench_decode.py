"""Decoding speed: our batched greedy decoder against transformers' ``generate`` one utterance at a time.

    PYTHONPATH=src .venv/bin/python bench/bench_decode.py [--results results]

Reads (never writes) a finished default-preset ``results`` folder: a trained run's checkpoint
(default: the audio-only opt-small run) and the test split's tokens of one condition. Both
decoders get the same prompts, the same ``max_new_tokens`` and the same output restriction (text
ids and ``</s>`` only: ``suppress_tokens`` for ``generate``), greedy with the KV cache
(``do_sample=False, use_cache=True``); the script checks that they write the same transcripts and
reports utterances and generated tokens per second and the ratio. ``--mamba`` adds the same
comparison for a Mamba of ``--config`` (untrained, seeded: the speed, not the words, is measured;
its recurrent state plays the KV cache's part).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import add_data_args, real_layout, real_streams  # noqa: E402

DEFAULT_RUN = "runs/A.mfcc.mix.opt-small.paper.s0/checkpoint.pt"


def hf_generate(model, layout, streams, n: int, max_new_tokens: int) -> list[np.ndarray]:
    """transformers' generate, one utterance at a time, restricted to the decoder's output ids."""
    import torch

    from dmlm.model.sequence import prompt

    banned = np.flatnonzero(~layout.output_mask()).tolist()
    out = []
    with torch.no_grad():
        for i in range(n):
            x = torch.from_numpy(prompt({m: streams[m][i] for m in layout.modalities}, layout))[None]
            y = model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                use_cache=True,
                eos_token_id=layout.eos,
                pad_token_id=layout.pad,
                suppress_tokens=banned,
            )[0, x.shape[1] :].numpy()
            if len(y) and y[-1] == layout.eos:
                y = y[:-1]
            out.append(layout.to_text(y))
    return out


def compare(name, model, layout, streams, args) -> None:
    from dmlm.model.decode import greedy_decode

    n = min(args.utterances, len(streams["transcript"]))
    inputs = {m: [streams[m][i] for i in range(n)] for m in layout.modalities}
    greedy_decode(model, layout, {m: v[: args.batch_size] for m, v in inputs.items()}, args.batch_size, 4, progress=False)
    t0 = time.perf_counter()
    ours = greedy_decode(model, layout, inputs, args.batch_size, args.max_new_tokens, progress=False)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = hf_generate(model, layout, streams, n, args.max_new_tokens)
    t_hf = time.perf_counter() - t0
    # the prompt passes alone (one new token each, one at a time): on a CPU most of the work
    t0 = time.perf_counter()
    greedy_decode(model, layout, inputs, 1, 1, progress=False)
    t_prompt = time.perf_counter() - t0
    # ours, prompt passes only (batched): what any decoder of these prompts pays before its first
    # new token; generate's time over it bounds our speed-up however cheap our steps get
    t0 = time.perf_counter()
    greedy_decode(model, layout, inputs, args.batch_size, 1, progress=False)
    t_prompt_ours = time.perf_counter() - t0
    same = sum(a.tolist() == b.tolist() for a, b in zip(ours, theirs))
    tokens = sum(len(h) + 1 for h in ours)
    print(f"\n(2) decoding {name}: {n} test utterances, max_new_tokens {args.max_new_tokens}, {tokens} tokens written")
    print(f"{'decoder':<34}{'seconds':>9}{'utt/s':>9}{'tokens/s':>10}")
    print(f"{'generate, one at a time':<34}{t_hf:>9.2f}{n / t_hf:>9.1f}{tokens / t_hf:>10.0f}")
    print(f"{f'ours, batch {args.batch_size}':<34}{t_ours:>9.2f}{n / t_ours:>9.1f}{tokens / t_ours:>10.0f}")
    print(f"{'prompt passes alone, one at a time':<34}{t_prompt:>9.2f}  ({t_prompt / t_hf:.0%} of generate's time)")
    print(f"{f'prompt passes alone, batch {args.batch_size}':<34}{t_prompt_ours:>9.2f}  (our steps: {t_ours - t_prompt_ours:.2f} s)")
    print(f"speed-up {t_hf / t_ours:.1f}x (at most {t_hf / t_prompt_ours:.1f}x with free steps); identical transcripts: {same}/{n}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.add_argument("--checkpoint", type=Path, default=None, help=f"default: RESULTS/{DEFAULT_RUN}")
    p.add_argument("--test-cond", default="clean")
    p.add_argument("--utterances", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=None, help="default: evaluation.batch_size of --config")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: evaluation.max_new_tokens")
    p.add_argument("--mamba", default=None, help="also compare an untrained Mamba backbone of --config")
    args = p.parse_args()

    import torch

    from dmlm.cli import use_threads
    from dmlm.model import checkpoint
    from dmlm.model.backbone import build_backbone

    use_threads(args.threads)
    config = yaml.safe_load(args.config.read_text())
    args.batch_size = args.batch_size or config["evaluation"]["batch_size"]
    args.max_new_tokens = args.max_new_tokens or config["evaluation"]["max_new_tokens"]
    model, layout, settings = checkpoint.load(args.checkpoint or args.results / DEFAULT_RUN)
    streams = real_streams(args.results, args.dataset, "test", [*layout.modalities, "transcript"], args.test_cond)
    print(f"{args.threads} thread(s), torch {torch.__version__}; checkpoint of {settings.get('backbone_name')}")
    compare(f"{settings.get('backbone_name')} (trained)", model, layout, streams, args)
    if args.mamba:
        layout = real_layout(args.results, args.dataset, layout.modalities)
        torch.manual_seed(0)
        mamba = build_backbone(config["backbones"][args.mamba], layout.vocab_size, args.mamba, layout).eval()
        compare(f"{args.mamba} (untrained)", mamba, layout, streams, args)


if __name__ == "__main__":
    main()
