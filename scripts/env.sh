# Sourced by the other scripts: create .venv once and install cifarlens with what it needs.
# TORCH_SPEC picks the PyTorch build: the default pins the version this project is tested with.
# Which build pip finds for it depends on the index: PyPI's Linux wheel is the CUDA build (it
# also runs on CPU); add "--index-url https://download.pytorch.org/whl/cpu" for the CPU build
# (README, "Set-up").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.cifarlens-installed
want="$(cat pyproject.toml) $TORCH_SPEC ${CIFARLENS_EXTRAS:-}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "$TORCH_SPEC" -e ".${CIFARLENS_EXTRAS:-}"
  printf '%s' "$want" > "$stamp"
fi
