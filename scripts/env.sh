# Sourced by the other scripts: create .venv once and install cifarlens with what it needs.
# TORCH_SPEC picks the PyTorch build: the default is the CPU wheel this project is tested with;
# on a GPU machine use e.g. TORCH_SPEC="torch" (the CUDA build from PyPI).
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
