#!/usr/bin/env bash
# Set up (once, with test extras and headless Chromium for the report test), then run the suite.
# ray and slurm: the cluster engines' tests run in CI (a real local Ray instance, submitit's local
# executor); together about 270 MB and 18 s of install on the dev machine (docs/cluster.md).
set -euo pipefail
CIFARLENS_EXTRAS="[dev,ray,slurm]"
source "$(dirname "$0")/env.sh"
cd "$CIFARLENS_ROOT"  # the suite's paths (tests/, pyproject's settings) are the checkout's
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the report's browser test..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "warning: could not install chromium; the browser test will say so" >&2
  else
    echo "note: chromium not found; install it (e.g. apt-get install chromium) for the browser test" >&2
  fi
fi
# One torch thread per test process unless the caller says otherwise: the tests' models are tiny,
# several tests start worker processes beside the test's own, and on a 2-core machine two
# threads each oversubscribe the cores (docs/benchmarks.md section 8 was measured this way).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# One worker per core (pytest-xdist), each test file in one worker so its module fixtures are
# built once: 2 cores take the suite from 13 to about 9 minutes (docs/benchmarks.md section 8).
# CIFARLENS_TEST_WORKERS=0 runs it in this process; a -n of the caller's own wins.
WORKERS=(-n "${CIFARLENS_TEST_WORKERS:-auto}" --dist loadfile)
# pytest exits 5 when it collected no test: that is a failure here, never a pass.
set +e
"$CIFARLENS_VENV/bin/python" -m pytest "${WORKERS[@]}" "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "error: no tests were collected" >&2; exit 1; fi
exit "$rc"
