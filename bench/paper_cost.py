"""GPU-hours of a preset's training, from its grid, measured token lengths and measured throughput.

What is exact, measured or assumed (printed with the numbers):

- exact, from the config: the runs (dmlm.grid), each run's sequences = max_steps x batch_size,
  the backbone's parameter count (built from its settings), image patch tokens per image
  ((height // patch) x (width // patch)).
- measured, from a finished run's token files (`--tokens results/tokens/<dataset>`, any preset):
  mean tokens per utterance of audio, lips, OCR and transcript on the train split. Audio is
  scaled by that preset's frame_stack / this preset's (units per second follow the frame rate);
  lips are measured per tokenizer, matched by name (`pixels`, `reader`), and scaled the same way;
  the collapse of repeated units is taken as measured.
- measured here: training tokens/s of the backbone on this CPU (1 thread, forward + backward +
  AdamW, batch x length below), hence this CPU's achieved FLOP/s under 6 x params x tokens.
- assumed: the GPU's sustained training rate, an H100 SXM's dense peak (fp32 67, TF32 495, bf16
  989 TFLOP/s) x `--mfu` (default 25%, typical of a 125M-parameter model); that length-bucketed
  batches waste no compute on padding; Whisper units at 50 Hz and MFCC at 100 Hz per frame_stack,
  with the collapse of repeats as measured for MFCC; CRAFT and raster image tokens on the same grid
  as patches.

    .venv/bin/python bench/paper_cost.py --configfile presets/paper.yaml --tokens results/tokens/3eq \
        --tokens-config workflow_config.yaml
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import yaml

from dmlm import grid
from dmlm.config import load_config
from dmlm.storage import Ragged


def mean_lengths(tokens: Path, measured_config: dict) -> dict[str, float]:
    """Mean tokens per train utterance of each stream of a finished run (first tokenizer of each)."""
    def mean(prefix: Path) -> float:
        return float(np.diff(Ragged.load(prefix).offsets).mean())

    audio_name = next(iter(measured_config["tokens"]["audio"]))
    # the training condition's audio units (clean, or a noise recipe's mixture: same unit rate)
    audio = sorted((tokens / "audio" / audio_name).glob("*/train.npy"), key=lambda p: p.parent.name != "clean")
    if not audio:
        raise SystemExit(f"no audio train tokens under {tokens / 'audio' / audio_name}")
    audio = audio[0].with_suffix("")
    # every lip tokenizer of the measured preset whose train tokens exist, by name: units per
    # utterance x frame_stack = collapsed video frames per utterance (25 fps everywhere)
    lips = {name: mean(tokens / "lips" / name / "train") * spec.get("frame_stack", 1)
            for name, spec in measured_config["tokens"]["lips"].items()
            if (tokens / "lips" / name / "train.npy").exists()}
    if not lips:
        raise SystemExit(f"no lips train tokens under {tokens / 'lips'} for {sorted(measured_config['tokens']['lips'])}")
    return {
        "audio": mean(audio),
        "audio_rate": FRAME_RATE[measured_config["tokens"]["audio"][audio_name]["encoder"]]
        / measured_config["tokens"]["audio"][audio_name]["frame_stack"],
        "lips": lips,
        "ocr": mean(tokens / "ocr" / "local" / "train"),
        "transcript": mean(tokens / "transcript" / "local" / "train"),
    }


# frames per second before stacking: MFCC/log-mel 10 ms hop (tokens/audio.py), Whisper encoder 50 Hz
FRAME_RATE = {"mfcc_kmeans": 100, "logmel_kmeans": 100, "whisper_kmeans": 50}
# assumed peak dense TFLOP/s of one H100 SXM: what the training code would use on it
PRECISIONS = {"fp32 (training.precision: fp32)": 67.0, "tf32 matmuls": 495.0,
              "bf16 autocast (training.precision: auto on CUDA, the default)": 989.0}


def stream_length(config: dict, modality: str, encoder: str | None, measured: dict) -> float:
    if modality == "audio":  # measured units/utterance, scaled by units per second (collapse as measured)
        spec = config["tokens"]["audio"][encoder]
        rate = FRAME_RATE[spec["encoder"]] / spec["frame_stack"]
        return measured["audio"] * rate / measured["audio_rate"]
    if modality == "image":
        spec = config["tokens"]["image"][encoder]
        patch = spec.get("patch", 10)  # raster: one token per character cell; taken as a patch grid
        return (config["corpus"]["image"]["height"] // patch) * (config["corpus"]["image"]["width"] // patch)
    if modality == "lips":  # the same-named tokenizer's measured frames per utterance / this frame_stack
        if encoder not in measured["lips"]:
            raise SystemExit(f"tokens.lips.{encoder}: no lip tokenizer of that name was measured "
                             f"(measured: {', '.join(sorted(measured['lips']))}); pass --tokens/--tokens-config of a "
                             "run that has it")
        return measured["lips"][encoder] / config["tokens"]["lips"][encoder].get("frame_stack", 1)
    return measured[modality]


def training_tokens(config: dict, measured: dict) -> tuple[int, dict[str, float], dict[str, float]]:
    """(runs, training tokens per backbone, mean sequence length per modality set)."""
    total, per_set = dict.fromkeys(config["backbones"], 0.0), {}
    runs = grid.runs_table(config)
    steps = config["training"]["max_steps"] * config["training"]["batch_size"]
    for run in runs["run"]:
        axes = grid.parse_run_name(run)
        modalities = grid.modality_names(axes["modalities"])
        encoders = grid.run_encoders(run)
        # + <modality start/end> per block, <text>, </s>
        length = sum(stream_length(config, m, encoders.get(m), measured) for m in modalities)
        length += measured["transcript"] + 2 * len(modalities) + 2
        per_set[f"{axes['modalities']}.{axes['encoders']}"] = length
        total[axes["backbone"]] += steps * length
    return len(runs), total, per_set


def cpu_throughput(backbone: dict, vocab: int, batch: int, length: int, steps: int) -> tuple[float, int]:
    """Measured training tokens/s on 1 CPU thread, and the parameter count."""
    import torch

    from dmlm.model.backbone import build_backbone
    from dmlm.model.train import TrainConfig, make_optimizer, weighted_loss

    torch.set_num_threads(1)
    torch.manual_seed(0)
    settings = dict(backbone)
    if "max_positions" in settings:  # OPT's position table must hold the bench length (Mamba has none)
        settings["max_positions"] = max(length, settings["max_positions"])
    model = build_backbone(settings, vocab, "bench")
    model.train()
    optimizer = make_optimizer(model, TrainConfig())
    ids = torch.randint(8, vocab, (batch, length))
    weights = torch.ones(batch, length)
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        loss = weighted_loss(model, ids, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in model.parameters())
    return batch * length / float(np.mean(times[1:])), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", default="presets/paper.yaml")
    parser.add_argument("--tokens", required=True, help="results/tokens/<dataset> of a finished run")
    parser.add_argument("--tokens-config", default="workflow_config.yaml", help="the preset that made --tokens")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--mfu", type=float, default=0.25, help="assumed model FLOP utilisation on the GPU")
    args = parser.parse_args()

    config = load_config(args.configfile)
    measured = mean_lengths(Path(args.tokens), yaml.safe_load(Path(args.tokens_config).read_text()))
    n_runs, tokens, per_set = training_tokens(config, measured)
    vocab = 256 + sum(spec.get("n_units", 256) for kind in ("audio", "lips", "image")
                      for spec in config["tokens"][kind].values())
    steps = config["training"]["max_steps"] * config["training"]["batch_size"]
    print(f"measured mean tokens per utterance ({args.tokens}): " +
          ", ".join(f"{k} {v:.1f}" for k, v in measured.items() if k not in ("audio_rate", "lips")) +
          "; lip frames per utterance after collapsing repeated units: " +
          ", ".join(f"{name} {v:.1f}" for name, v in measured["lips"].items()))
    print("mean sequence length per modality set and encoders: " +
          ", ".join(f"{k} {v:.0f}" for k, v in sorted(per_set.items())))
    print(f"{args.configfile}: {n_runs} training runs x {steps:,} sequences = {sum(tokens.values()) / 1e9:.2f} G training tokens")
    totals = dict.fromkeys(PRECISIONS, 0.0)
    for name, backbone in config["backbones"].items():
        if not tokens[name]:
            continue
        rate, params = cpu_throughput(backbone, vocab, args.batch, args.length, args.steps)
        print(f"backbone {name}: {params / 1e6:.1f}M parameters (vocabulary {vocab}); measured on this CPU, 1 thread, "
              f"batch {args.batch} x {args.length}: {rate:.0f} tokens/s ({6 * params * rate / 1e9:.1f} GFLOP/s achieved); "
              f"{tokens[name] / 1e9:.2f} G tokens = {6 * params * tokens[name]:.2e} FLOP; "
              f"this CPU at 1 thread: {tokens[name] / rate / 3600 / 24 / 365:,.0f} CPU-years")
        for precision, tflops in PRECISIONS.items():
            gpu_rate = tflops * 1e12 * args.mfu / (6 * params)
            totals[precision] += tokens[name] / gpu_rate / 3600
    for precision, hours in totals.items():
        print(f"GPU-hours on H100s, {precision}: peak {PRECISIONS[precision]:.0f} TFLOP/s x {args.mfu:.0%} (assumed) "
              f"-> {hours:,.0f} GPU-hours ({hours / n_runs:.1f} per run)")

if __name__ == "__main__":
    main()
