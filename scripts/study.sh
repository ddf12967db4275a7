#!/usr/bin/env bash
# The main job: set up (once), then run the whole study. Extra arguments go to `cifarlens study`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec .venv/bin/cifarlens study "$@"
