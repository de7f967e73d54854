"""Tokenizer speed: tokens per second per modality and encoder, audio as times real time, and an
estimate of the total time to tokenize a preset.

    .venv/bin/python bench/bench_tokens.py                    # default preset, 16 generated utterances, 2 threads
    .venv/bin/python bench/bench_tokens.py --n 32 --threads 1
    .venv/bin/python bench/bench_tokens.py --corpus results/corpus/3eq/val --encoders mfcc_kmeans whisper_kmeans

Media: ``--corpus`` (a split folder: manifest.tsv, audio, lips, images.npy) or a split of ``--n``
utterances built with ``dmlm.corpus.build.build_split`` from the preset's corpus settings. Every
encoder is fitted on those items (the fit time is scaled linearly to the preset's fit counts) and
then encodes them once, timed (tokens counted before collapsing repeats are not reported: these
are the ids written, after collapsing where the settings collapse). Settings come from the preset's
``tokens`` section; encoders the preset does not name use ``EXTRA`` below with the preset's
sizes.

The total estimate multiplies the measured seconds per item by the number of items the preset
encodes: for audio train + val once per training-noise recipe of the studies and test once per test
SNR; lips and images train + val + test; text the transcripts and OCR strings of all splits; plus
every codebook fit. It runs on the same machine at the same time as whatever else runs: say so
when you quote it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# settings for encoders the preset does not list (the preset's sizes are used where they exist)
EXTRA = {
    "audio": {"whisper_kmeans": {"encoder": "whisper_kmeans", "n_units": 128, "fit_utterances": 500,
                                 "frame_stack": 2, "collapse_repeats": True}},
    "image": {"craft_kmeans": {"encoder": "craft_kmeans", "n_units": 256, "fit_images": 500, "patch": 25},
              "raster": {"encoder": "raster"}},
}
BENCH_UNITS = 32  # k-means units when fitting on the benchmark's few items


def load_config(preset: str) -> dict:
    path = ROOT / "workflow_config.yaml" if preset == "default" else ROOT / "presets" / f"{preset}.yaml"
    return yaml.safe_load(path.read_text())


def encoder_settings(config: dict) -> dict[str, dict[str, dict]]:
    """modality -> encoder -> settings (the preset's named tokenizers, then EXTRA)."""
    out: dict[str, dict[str, dict]] = {}
    for modality in ("audio", "lips", "image"):
        entries = config["tokens"].get(modality, {})
        if "encoder" in entries:  # an older config: one tokenizer per modality
            entries = {entries["encoder"]: entries}
        out[modality] = {s["encoder"]: dict(s) for s in entries.values()}
        for name, s in EXTRA.get(modality, {}).items():
            out[modality].setdefault(name, dict(s))
    return out


def fit_count(settings: dict) -> int:
    for key in ("fit_utterances", "fit_images", "fit_frames"):
        if key in settings:
            return int(settings[key])
    return 0


def preset_items(config: dict) -> dict[str, int]:
    """Items the preset encodes per modality (audio counts every noise condition)."""
    splits = config["corpus"]["splits"]
    recipes, snrs = set(), set()
    for study in config["studies"].values():
        recipes.update(study.get("train_noise", []))
        snrs.update(str(s) for s in study.get("test_snrs", []))
    n_all = splits["train"] + splits["val"] + splits["test"]
    return {
        "audio": (splits["train"] + splits["val"]) * max(1, len(recipes)) + splits["test"] * max(1, len(snrs)),
        "lips": n_all,
        "image": n_all,
        "text": 2 * n_all,
    }


def make_media(args, config: dict, tmp: Path) -> Path:
    if args.corpus:
        return Path(args.corpus)
    from dmlm.corpus.build import build_split

    settings = {"seed": config["seed"], **{k: config["corpus"][k] for k in ("image", "speech", "lips")}}
    out = tmp / "train"
    t0 = time.perf_counter()
    build_split(out, "train", args.n, settings, threads=args.threads, progress=False)
    print(f"[bench] built {args.n} utterances in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


def media_of(split_dir: Path, modality: str) -> str:
    return str(split_dir / "images.npy") if modality == "image" else str(split_dir / modality)


def bench_encoder(modality: str, settings: dict, split_dir: Path, tmp: Path, config: dict, n_items: int):
    from dmlm.storage import Ragged
    from dmlm.tokens.registry import encode_media, fit_codebook

    name = settings["encoder"]
    fit_settings = {**settings, "seed": config["seed"], "sample_rate": config["corpus"]["speech"]["sample_rate"]}
    if "n_units" in fit_settings:
        fit_settings["n_units"] = BENCH_UNITS
    for key in ("fit_utterances", "fit_images"):
        if key in fit_settings:
            fit_settings[key] = n_items
    if "fit_frames" in fit_settings:
        fit_settings["fit_frames"] = min(int(fit_settings["fit_frames"]), 20000)
    cb_path = tmp / f"{modality}-{name}.npz"
    t0 = time.perf_counter()
    fit_codebook(modality, fit_settings, media_of(split_dir, modality), cb_path)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = encode_media(modality, cb_path, media_of(split_dir, modality), tmp / f"tok-{modality}-{name}")
    enc_s = time.perf_counter() - t0
    tokens = int(sum(len(x) for x in ids))
    extra = ""
    if modality == "audio":
        audio = Ragged.load(split_dir / "audio")
        seconds = float(audio.lengths().sum()) / config["corpus"]["speech"]["sample_rate"]
        extra = f"{seconds / enc_s:.1f}x real time"
    elif modality == "lips":
        frames = int(Ragged.load(split_dir / "lips").lengths().sum())
        extra = f"{frames / enc_s:.0f} frames/s"
    # fit time per fitted item, scaled to the preset's fit count
    fit_est = fit_s / n_items * fit_count(settings) if fit_count(settings) and modality != "lips" else fit_s
    return {"modality": modality, "encoder": name, "items": len(ids), "tokens": tokens, "encode_s": enc_s,
            "tokens_per_s": tokens / enc_s, "s_per_item": enc_s / len(ids), "fit_s": fit_s,
            "fit_est_s": fit_est, "note": extra}


def bench_text(split_dir: Path, tmp: Path):
    import json

    from dmlm.storage import write_table
    from dmlm.tokens.text import encode_table, train_text_tokenizer
    from dmlm.tokens.text import read_text_column

    equations = read_text_column(split_dir / "manifest.tsv", "equations")
    ocr = [" ".join(json.loads(e)) for e in equations]
    write_table(tmp / "ocr.tsv", [{"id": i, "ocr": t, "engine": "bench"} for i, t in enumerate(ocr)])
    t0 = time.perf_counter()
    train_text_tokenizer(split_dir / "manifest.tsv", tmp / "ocr.tsv", tmp / "tok.json", {"min_frequency": 1})
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    a = encode_table(tmp / "tok.json", split_dir / "manifest.tsv", "transcript", tmp / "t")
    b = encode_table(tmp / "tok.json", tmp / "ocr.tsv", "ocr", tmp / "o")
    enc_s = time.perf_counter() - t0
    tokens = int(sum(len(x) for x in a + b))
    items = len(a) + len(b)
    return {"modality": "text", "encoder": "wordlevel", "items": items, "tokens": tokens, "encode_s": enc_s,
            "tokens_per_s": tokens / enc_s, "s_per_item": enc_s / items, "fit_s": fit_s, "fit_est_s": fit_s,
            "note": "transcript + OCR"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default", help="default (workflow_config.yaml) or presets/<name>.yaml")
    parser.add_argument("--corpus", default=None, help="an existing split folder (else --n utterances are built)")
    parser.add_argument("--n", type=int, default=16, help="utterances to build when --corpus is not given")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch, CTranslate2, BLAS)")
    parser.add_argument("--encoders", nargs="*", default=None, help="only these encoders (e.g. mfcc_kmeans whisper_kmeans)")
    args = parser.parse_args(argv)

    from dmlm.cli import use_threads

    use_threads(args.threads)
    config = load_config(args.preset)
    tmp = Path(tempfile.mkdtemp(prefix="bench_tokens."))
    rows, failed = [], []
    try:
        split_dir = make_media(args, config, tmp)
        from dmlm.storage import Ragged

        n_items = len(Ragged.load(split_dir / "audio"))
        for modality, encoders in encoder_settings(config).items():
            for name, settings in encoders.items():
                if args.encoders and name not in args.encoders:
                    continue
                try:
                    rows.append(bench_encoder(modality, settings, split_dir, tmp, config, n_items))
                except Exception as err:  # an encoder that is not installed here: report, go on
                    failed.append(f"{modality}/{name}: {type(err).__name__}: {err}")
        if not args.encoders or "wordlevel" in args.encoders:
            rows.append(bench_text(split_dir, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    items = preset_items(config)
    print(f"\n{n_items} items, {args.threads} thread(s); preset {config['name']!r}: "
          + ", ".join(f"{m} {n} items" for m, n in items.items()))
    print("| modality | encoder | tokens/s | s/item | speed | fit (s, measured) | preset total (min) |")
    print("|---|---|---:|---:|---|---:|---:|")
    for r in rows:
        total = items[r["modality"]] * r["s_per_item"] + r["fit_est_s"]
        r["preset_total_s"] = total
        print(f"| {r['modality']} | {r['encoder']} | {r['tokens_per_s']:,.0f} | {r['s_per_item']:.3f} | {r['note']} "
              f"| {r['fit_s']:.1f} | {total / 60:.1f} |")
    for f in failed:
        print(f"not measured: {f}")
    # the preset's own tokenizers (its named ones), not the extra encoders
    named = {(m, s["encoder"]) for m, entries in config["tokens"].items() if m in ("audio", "lips", "image")
             for s in (entries.values() if "encoder" not in entries else [entries])}
    preset_total = sum(r["preset_total_s"] for r in rows if (r["modality"], r["encoder"]) in named or r["modality"] == "text")
    print(f"\nTotal to tokenize preset {config['name']!r} with its own tokenizers, one job at a time: "
          f"{preset_total / 60:.1f} min (estimate from the rates above)")


if __name__ == "__main__":
    main()
