"""Mixing speed in times real time (audio seconds mixed per wall-clock second), one process.

    .venv/bin/python bench/bench_mixing.py                       # synthesize 300 utterances
    .venv/bin/python bench/bench_mixing.py results/corpus/3eq/test   # or a generated split

Without a corpus folder it builds default-preset-like data: 24 espeak-ng utterances of two spoken
equations with 1 s of silence between them (0.3 s lead-in and tail, random voices), repeated
under distinct ids to ``--utterances``. It then builds the default built-in noise bank
(``seconds_per_source`` 20, recordings on) and times ``mix_split`` for each placement with a fixed
test condition (every utterance noised at 0 dB) and the default training recipe (half noised at a
random SNR of 20..-10 dB). Output: a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = 16000
EQUATIONS = [
    "three plus four equals seven", "nine minus two equals seven", "twelve divided by three equals four",
    "five times six equals thirty", "x squared plus one equals ten", "log of one hundred equals two",
    "two over four equals one over two", "eight minus y equals five", "seven times seven equals forty nine",
    "fifteen minus five equals ten", "a plus b equals c", "two to the power three equals eight",
]
VOICES = ["en-us+m1", "en+f2", "en-us+f3", "en+m3", "en-us+m4", "en+f4", "en-us+Alex", "en+belinda"]


def synth_corpus(folder: Path, n: int, seed: int = 0) -> Path:
    from dmlm.corpus.speech import Voice, synthesize
    from dmlm.storage import save_ragged, write_table

    rng = np.random.default_rng(seed)
    base = []
    for k in range(24):
        v = Voice(name=VOICES[k % len(VOICES)], rate_wpm=int(rng.integers(150, 200)), pitch=int(rng.integers(35, 65)))
        i, j = rng.choice(len(EQUATIONS), size=2, replace=False)
        parts = [synthesize(EQUATIONS[i], v, SR).audio, synthesize(EQUATIONS[j], v, SR).audio]
        parts = [np.asarray(p, np.float64) for p in parts]
        lead, gap = np.zeros(int(0.3 * SR)), np.zeros(SR)
        audio = np.concatenate([lead, parts[0], gap, parts[1], lead])
        audio = (0.5 * audio / np.max(np.abs(audio))).astype(np.float32)
        t1 = 0.3
        t2 = t1 + len(parts[0]) / SR + 1.0
        base.append((audio, [[t1, t1 + len(parts[0]) / SR], [t2, t2 + len(parts[1]) / SR]]))
    rows, audios = [], []
    for u in range(n):
        audio, seg = base[u % len(base)]
        rows.append({"id": f"bench-{u:06d}", "segments": json.dumps(seg), "duration": round(len(audio) / SR, 4)})
        audios.append(audio)
    folder.mkdir(parents=True, exist_ok=True)
    write_table(folder / "manifest.tsv", rows)
    save_ragged(folder / "audio", audios, dtype=np.float32)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus_dir", nargs="?", help="a corpus split folder (manifest.tsv + audio); default: synthesize")
    ap.add_argument("--utterances", type=int, default=300)
    ap.add_argument("--seconds-per-source", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    from dmlm.noise.bank import build_bank
    from dmlm.noise.mix import PLACEMENTS, mix_split
    from dmlm.storage import Ragged

    with tempfile.TemporaryDirectory(prefix="bench-mix-") as tmp:
        tmp = Path(tmp)
        if args.corpus_dir:
            corpus = Path(args.corpus_dir)
        else:
            t = time.perf_counter()
            corpus = synth_corpus(tmp / "corpus", args.utterances)
            print(f"synthesized {args.utterances} utterances in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        audio = Ragged.load(corpus / "audio")
        n_utt, audio_s = len(audio), len(audio.data) / SR
        t = time.perf_counter()
        sources = build_bank({"name": "builtin", "seconds_per_source": args.seconds_per_source, "seed": args.seed},
                             tmp / "bank" / "noise")
        bank_s = time.perf_counter() - t
        print(f"corpus: {corpus} ({n_utt} utterances, {audio_s:.0f} s of audio, {audio_s / n_utt:.1f} s each)")
        print(f"built-in bank: {len(sources)} sources, {sum(s for *_, s in sources):.0f} s, built in {bank_s:.1f} s\n")
        print("| placement | condition | noised | wall s | x real time |")
        print("|---|---|---|---|---|")
        recipes = {"snr0": {"fraction_noisy": 1.0, "snrs": [0]},
                   "mix": {"fraction_noisy": 0.5, "snrs": [20, 10, 5, 0, -5, -10]}}
        for placement in PLACEMENTS:
            for cond, recipe in recipes.items():
                settings = {"seed": args.seed, "placement": placement, **recipe}
                t = time.perf_counter()
                summary = mix_split(corpus, tmp / "bank" / "noise", tmp / "out" / f"{placement}-{cond}", settings)
                wall = time.perf_counter() - t
                print(f"| {placement} | {cond} | {summary['noisy']}/{summary['utterances']} | {wall:.2f} | "
                      f"{audio_s / wall:.0f} |", flush=True)


if __name__ == "__main__":
    main()
