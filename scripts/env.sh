# Sourced by the other scripts: create .venv once and install cifarlens with what it needs.
# TORCH_SPEC picks the PyTorch build: the default pins the version this project is tested with.
# Which build pip finds for it depends on the index: PyPI's Linux wheel is the CUDA build (it
# also runs on CPU); add "--index-url https://download.pytorch.org/whl/cpu" for the CPU build
# (README, "Set-up").
# The venv lives in the checkout, but the caller's folder is left as it is: relative paths given
# to the scripts (--data-dir data --out study) resolve where the user stands, not in the checkout.
# Sets CIFARLENS_ROOT (the checkout) and CIFARLENS_VENV (its .venv, absolute).
set -euo pipefail
CIFARLENS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CIFARLENS_VENV="$CIFARLENS_ROOT/.venv"
(
  cd "$CIFARLENS_ROOT"  # a subshell: the install sees the checkout, the caller keeps its folder
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
)
