"""One recipe experiment outside the workflow (docs/recipe-log.md): train one run on the prepared
tokens of a preset, with some config values changed, into a folder of its own, and evaluate it on
the **validation split** at each of the study's test SNRs. Recipe choices are made on these numbers;
the test split is read only by the workflow's final evaluation (README, "Research protocol").

It calls the same `dmlm` commands the rules call (text-tokenizer, encode-text, train, evaluate),
reads the audio, lip and image tokens the workflow prepared, and trains its own text tokenizer, so
that `tokens.text` can change too. Token files that are missing (the validation split's audio at
the test SNRs is not part of a workflow run) are made first by Snakemake with the same config.
Only the values a run reads may change: `training.*`, `backbones.*`, `loss_weights.*`,
`tokens.*` (the first tokenizer of a modality is the one used), `noise.train_noise.*` (a
training-noise recipe) and `studies.*` (the first study's axes) (`--set KEY=YAML`, repeatable), and the block order (`--order`). With `--set`, the changed
config is written to `<out>/config.yaml` and Snakemake makes missing token files from it.

    .venv/bin/python scripts/recipe_experiment.py exp/ao-whole --modalities A+O \\
        --set tokens.text.digits=whole --set training.schedule=cosine [--seed 1]

A folder holds one experiment (`<out>/experiment.json`): rerunning the same command reuses its
trained model, another command is refused. Writes `<out>/result.json`: the validation WER (%) per
test condition of the preset's first study, the best validation transcript loss and its step,
training minutes, and per condition the error rate on the first and on the second half of each
spoken equation's words (the noise covers the second half: a model that copies from the OCR or
reads the lips gains there), and the perceptual score of each extra modality (WER points lost when
it is deranged across the validation items; a model that copies from the OCR loses many).
`scripts/recipe_table.py` puts several results side by side.

`--trained-run results/runs/<run>` evaluates a model the workflow trained instead of training one:
it is adopted only if its checkpoint's settings equal the experiment's and the workflow's text
tokenizer equals the one the experiment trains (so it is the model this command would train).

`--prepare-only --cores 2` makes the token files and stops: run it once for the union of the
modality sets (e.g. `--modalities A+L+I`) before starting experiments side by side, since two
Snakemake processes cannot make the same files in one folder at once.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jiwer
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dmlm import grid  # noqa: E402
from dmlm.corpus.equations import parse_equation  # noqa: E402
from dmlm.report.metrics import perceptual_score  # noqa: E402
from dmlm.report.settings import permutation_seed  # noqa: E402

CHANGEABLE = ("training", "backbones", "loss_weights", "tokens", "noise.train_noise", "studies")


def apply(config: dict, assignment: str) -> None:
    key, sep, value = assignment.partition("=")
    if not sep or not any(key == c or key.startswith(c + ".") for c in CHANGEABLE):
        raise SystemExit(f"--set {assignment!r}: expected KEY=VALUE with KEY under {', '.join(CHANGEABLE)}")
    *parents, last = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value)


def run(args: list[str], log: Path) -> float:
    start = time.time()
    with open(log, "a") as f:
        proc = subprocess.run([sys.executable, "-m", "dmlm", *args], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"dmlm {args[0]} failed (see {log})")
    return time.time() - start


def half_of_each_word(manifest: pd.DataFrame) -> dict[str, list[int]]:
    """0 for the words of the first half of each spoken equation, 1 for the second half."""
    out = {}
    for row in manifest.itertuples():
        equations, tags = json.loads(row.equations), []
        for k in json.loads(row.spoken):
            n = len(parse_equation(equations[k]).spoken().split())
            tags += [0] * (n // 2) + [1] * (n - n // 2)
        out[row.id] = tags
    return out


def half_error_rates(hyps: pd.DataFrame, halves: dict[str, list[int]]) -> list[float]:
    """Errors per reference word of each half (%), from jiwer's alignment; an insertion counts
    against the half of the reference word it precedes."""
    errors, words = [0, 0], [0, 0]
    for row in hyps.itertuples():
        tags = halves[row.id]
        for chunk in jiwer.process_words(row.reference, row.hypothesis).alignments[0]:
            for i in range(chunk.ref_start_idx, chunk.ref_end_idx):
                words[tags[i]] += 1
                errors[tags[i]] += chunk.type != "equal"
            if chunk.type == "insert":
                errors[tags[min(chunk.ref_start_idx, len(tags) - 1)]] += chunk.hyp_end_idx - chunk.hyp_start_idx
    return [round(100 * e / max(w, 1), 1) for e, w in zip(errors, words)]


def snakemake_targets(configfile: Path, targets: list[Path], cores: int, log: Path) -> None:
    """Make token files the experiment reads that the workflow has not made yet."""
    missing = [str(t.relative_to(ROOT)) for t in targets if not t.exists()]
    if not missing:
        return
    # the targets go first: --configfile reads every word after it as a config file
    cmd = [str(Path(sys.executable).parent / "snakemake"), *missing, "-c", str(cores), "--configfile", str(configfile)]
    print(f"making {len(missing)} token files with Snakemake (log: {log})", flush=True)
    with open(log, "a") as f:
        if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode:
            raise SystemExit(f"snakemake could not make the token files (see {log})")


def adopt_trained_run(run_dir: Path, settings: dict, tokenizer: Path, workflow_tokenizer: Path, into: Path) -> float:
    """Copy a workflow run's model into the experiment (`into`) after checking it is the model the
    experiment would train; returns its training minutes."""
    import torch

    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.exists():
        raise SystemExit(f"--trained-run {run_dir}: no checkpoint.pt (not trained yet?)")
    trained = torch.load(checkpoint, map_location="cpu", weights_only=True)["settings"]
    wanted = json.loads(json.dumps(settings))  # training adds what it measured (the vocabulary sizes)
    differ = sorted(k for k in wanted if trained.get(k) != wanted[k])
    if differ:
        raise SystemExit(f"--trained-run {run_dir}: trained with other settings ({', '.join(differ)} differ)")
    if not workflow_tokenizer.exists() or workflow_tokenizer.read_bytes() != tokenizer.read_bytes():
        raise SystemExit(f"--trained-run {run_dir}: {workflow_tokenizer} is not the tokenizer this experiment trains")
    into.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoint.pt", "checkpoint.pt.sha256", "train_log.tsv"):
        shutil.copy2(run_dir / name, into / name)
    return float(pd.read_csv(into / "train_log.tsv", sep="\t")["elapsed_s"].iloc[-1]) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder of this experiment")
    parser.add_argument("--modalities", required=True, help="modality set, e.g. A or A+O")
    parser.add_argument("--configfile", type=Path, default=ROOT / "workflow_config.yaml")
    parser.add_argument("--seed", type=int, default=0, help="run seed")
    parser.add_argument("--order", default=None, help="block order (default: the study's first)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=YAML", help="change a config value")
    parser.add_argument("--trained-run", type=Path, default=None, help="evaluate this workflow run's model instead of training")
    parser.add_argument("--cores", type=int, default=1, help="cores for Snakemake when token files are missing")
    parser.add_argument("--prepare-only", action="store_true",
                        help="only make the token files the experiment reads, then stop (so that experiments "
                             "started side by side afterwards do not run Snakemake on the same files at once)")
    opts = parser.parse_args()

    config = yaml.safe_load(opts.configfile.read_text())
    for assignment in opts.set:
        apply(config, assignment)
    study = config["studies"][next(iter(config["studies"]))]
    if study.get("layout", [grid.DEFAULT_LAYOUT])[0] != grid.DEFAULT_LAYOUT:
        raise SystemExit("recipe_experiment: blocked layouts only (it passes no token times)")
    dataset, out = config["corpus"]["dataset"], opts.out.resolve()
    corpus, tokens = ROOT / "results" / "corpus" / dataset, ROOT / "results" / "tokens" / dataset
    modset = grid.ordered(opts.modalities, opts.order or study.get("order", [grid.DEFAULT_ORDER])[0])
    discrete = [m for m in grid.modality_names(modset) if m in grid.DISCRETE]
    encoders = {m: next(iter(config["tokens"][m])) for m in discrete}
    run_name = grid.run_name(modset, "+".join(encoders[m] for m in discrete) or "-", study["train_noise"][0],
                             study["backbone"][0], study["loss_weights"][0], opts.seed)
    settings = grid.run_settings(config, run_name)
    # a folder holds one experiment: its model is reused only by the same command
    asked = {"modalities": opts.modalities, "configfile": str(opts.configfile), "seed": opts.seed, "set": opts.set}
    if opts.order:
        asked["order"] = opts.order
    if opts.trained_run:
        asked["trained_run"] = str(opts.trained_run)
    out.mkdir(parents=True, exist_ok=True)
    record = out / "experiment.json"
    if record.exists() and json.loads(record.read_text()) != asked:
        raise SystemExit(f"{out} holds another experiment ({record.read_text().strip()}); choose another folder")
    if not opts.prepare_only:  # a folder that only made token files holds no experiment
        record.write_text(json.dumps(asked) + "\n")
    log = out / "dmlm.log"

    train_cond = grid.train_cond(config, study["train_noise"][0])
    conds = [grid.cond_of_snr(snr) for snr in study["test_snrs"]]

    def media_streams(split: str, cond: str) -> dict[str, Path]:
        return {m: tokens / m / encoders[m] / (f"{cond}/{split}" if m == "audio" else split) for m in discrete}

    needed = [*media_streams("train", train_cond).values(), *media_streams("val", train_cond).values(),
              *(p for cond in conds for p in media_streams("val", cond).values())]
    codebooks = {m: ROOT / "results" / "codebooks" / dataset / m / f"{e}.npz" for m, e in encoders.items()}
    # Snakemake makes the token files from the changed config (a new training-noise recipe, say)
    configfile = opts.configfile
    if opts.set:
        configfile = out / "config.yaml"
        configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake_targets(configfile, [*(Path(f"{p}.npy") for p in needed), *codebooks.values(),
                                        corpus / "val" / "manifest.tsv", corpus / "train" / "ocr.tsv"], opts.cores, log)
    if opts.prepare_only:
        print(f"token files for {opts.modalities} are ready", flush=True)
        return

    tokenizer = out / "tokenizer.json"
    run(["text-tokenizer", "--settings", json.dumps(config["tokens"]["text"]), "--manifest",
         str(corpus / "train" / "manifest.tsv"), "--ocr", str(corpus / "train" / "ocr.tsv"), "--out", str(tokenizer)], log)
    for field, table in (("transcript", "manifest.tsv"), ("ocr", "ocr.tsv")):
        for split in ("train", "val"):
            run(["encode-text", "--settings", "{}", "--tokenizer", str(tokenizer), "--table",
                 str(corpus / split / table), "--column", field, "--out-prefix", str(out / field / split)], log)

    def streams(split: str, cond: str) -> dict[str, str]:
        paths = {m: str(p) for m, p in media_streams(split, cond).items()}
        if "ocr" in settings["modalities"]:
            paths["ocr"] = str(out / "ocr" / split)
        return {**paths, "transcript": str(out / "transcript" / split)}

    train_args = ["train", "--settings", json.dumps(settings), "--tokenizer", str(tokenizer), "--out-dir", str(out / "run")]
    for split in ("train", "val"):
        train_args += [a for name, p in streams(split, train_cond).items() for a in ("--stream", f"{split}:{name}={p}")]
    train_args += [a for m, p in codebooks.items() for a in ("--codebook", f"{m}={p}")]
    if opts.trained_run and not (out / "run" / "checkpoint.pt").exists():
        minutes = adopt_trained_run(opts.trained_run.resolve(), settings, tokenizer,
                                    ROOT / "results" / "tokens" / dataset / "text" / "local" / "tokenizer.json", out / "run")
    elif (out / "run" / "checkpoint.pt").exists():  # trained before: keep the minutes it took then
        minutes = json.loads((out / "result.json").read_text())["train_minutes"] if (out / "result.json").exists() else None
    else:
        minutes = run(train_args, log) / 60

    curve = pd.read_csv(out / "run" / "train_log.tsv", sep="\t")
    best = curve["val_transcript_loss"].idxmin()
    result = {"run": run_name, "set": opts.set, "order": opts.order, "trained_run": asked.get("trained_run"),
              "split": "val", "train_minutes": minutes,
              "best_val_transcript_loss": round(float(curve["val_transcript_loss"][best]), 3),
              "best_step": int(curve["step"][best]), "wer": {}, "first_second_half_error": {}}
    manifest_path = corpus / "val" / "manifest.tsv"
    halves = half_of_each_word(pd.read_csv(manifest_path, sep="\t", keep_default_na=False, dtype=str))
    evaluation = {k: v for k, v in config["evaluation"].items() if k != "permutation_seed"}
    permuted_evaluation = {**evaluation, "permutation_seed": permutation_seed(config)}  # as rules/evaluate.smk

    def evaluated_wer(folder: Path, cond: str, permute: str | None = None) -> float:
        """Validation WER (%) at `cond`, with `permute` deranged across the items (evaluated once)."""
        if not (folder / "wer.json").exists():
            extra = ["--permute", permute] if permute else []
            run(["evaluate", "--settings", json.dumps(permuted_evaluation if permute else evaluation),
                 "--checkpoint", str(out / "run" / "checkpoint.pt"), "--tokenizer", str(tokenizer),
                 "--manifest", str(manifest_path), "--out-dir", str(folder), *extra,
                 *[a for name, p in streams("val", cond).items() for a in ("--stream", f"{name}={p}")]], log)
        return 100 * json.loads((folder / "wer.json").read_text())["wer"]

    for cond in conds:
        folder = out / "eval-val" / cond
        wer = evaluated_wer(folder, cond)
        result["wer"][cond] = round(wer, 1)
        hyps = pd.read_csv(folder / "hyps.tsv", sep="\t", keep_default_na=False, dtype=str)
        result["first_second_half_error"][cond] = half_error_rates(hyps, halves)
        # perceptual score on validation: how much worse with the extra modality deranged across items
        for extra in (m for m in settings["modalities"] if m != "audio"):
            raw, _ = perceptual_score(result["wer"][cond], evaluated_wer(folder / f"perm-{extra}", cond, permute=extra))
            result.setdefault("perceptual", {}).setdefault(extra, {})[cond] = round(raw, 1)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
