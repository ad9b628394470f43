# Sourced by the GPU scripts (gpu_checks.sh, gpu_quick.sh): sets PY, the Python that runs fedfuse.
# On a bare lent machine without the venv, a folder .gpu/ may carry wheels (.gpu/whl: what the
# image lacks; on the lent H200 that was diffusers, lightning-fabric, importlib_metadata and prdc,
# and a fedfuse wheel for its plugins' entry points: `pip wheel --no-deps . -w .gpu/whl`) and
# Fashion-MNIST's IDX files (.gpu/fashion); they are installed first, and fedfuse is read from
# this checkout. Ray is never needed there: the -gpu-quick tiers run on Flower's deployment engine.
PY=${PY:-.venv/bin/python}
if [ -d .gpu/whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/whl/*.whl || exit 1
  export PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  PY=python3
  mkdir -p /usr/share/datasets/fashion-mnist && cp .gpu/fashion/* /usr/share/datasets/fashion-mnist/
fi

require_modules() {  # name the missing ones at once (seconds), rather than after a deployment started
  $PY - "$@" <<'PY'
import importlib.util, sys
missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing on this machine: {', '.join(missing)} (their wheels go in .gpu/whl; Ray is not needed)")
PY
}
