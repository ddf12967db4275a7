#!/usr/bin/env bash
# The main job: set up (once), then run the whole study. Extra arguments go to `cifarlens study`;
# relative paths in them resolve in the folder this script is run from.
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$CIFARLENS_VENV/bin/cifarlens" study "$@"
