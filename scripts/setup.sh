#!/usr/bin/env bash
# One-time (idempotent) set-up on a Debian machine: system packages, then a virtual environment
# at .venv with the exact pins of envs/requirements-cpu.txt and dmlm installed from src/.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
[ -e /usr/lib/x86_64-linux-gnu/libespeak-ng.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libespeak-ng.so.1 ] || need+=(libespeak-ng1)
command -v tesseract >/dev/null || need+=(tesseract-ocr tesseract-ocr-eng)
# recordings and a soundfont for the built-in noise bank (noise.bank.recordings)
[ -d /usr/share/sonic-pi/samples ] || need+=(sonic-pi-samples)
[ -d /usr/share/games/colobot/music ] || need+=(colobot-common-sounds)
command -v fluidsynth >/dev/null || need+=(fluidsynth)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
# a C compiler: Mamba's fused CPU scan (src/dmlm/model/selective_scan.c) is built on first use
command -v cc >/dev/null || need+=(gcc libc6-dev)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# headless browser for the test that opens the HTML report (tests/test_report_html.py)
command -v chromium >/dev/null || need+=(chromium)
# WITH_SLURM=1 (.ci/run): the Debian Slurm packages, so that tests/test_slurm.py starts a real
# single-node Slurm (scripts/slurm-up.sh) instead of skipping
if [ "${WITH_SLURM:-0}" = 1 ]; then
  [ -x /usr/sbin/slurmctld ] || need+=(slurmctld)
  [ -x /usr/sbin/slurmd ] || need+=(slurmd)
  [ -x /usr/sbin/munged ] || need+=(munge)
  command -v sbatch >/dev/null || need+=(slurm-client)
fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

stamp=.venv/.requirements.sha256
want=$(cat envs/requirements-cpu.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r envs/requirements-cpu.txt
  .venv/bin/pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
echo "set-up done: $(.venv/bin/python -c 'import torch, transformers, snakemake; print("torch", torch.__version__, "transformers", transformers.__version__, "snakemake", snakemake.__version__)')"
