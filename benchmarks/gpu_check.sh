#!/usr/bin/env bash
# The GPU check on a bare machine without network (docs/performance.md, "GPU check"):
#   benchmarks/gpu_check.sh [gpu_check.py arguments]      e.g. --tokenizer .gpu_wheels/smollm2-tokenizer
# Each requirement of benchmarks/gpu_wheels.txt that the image does not satisfy is installed from the
# wheels in $WHEELS (default .gpu_wheels) into $SITE (default .gpu_site), put on PYTHONPATH: the
# image's own packages are left as they are. grpolab itself runs from src/ (no install). The whole check is cut at
# $LIMIT seconds (default 480: the 8 minutes it must fit in).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
WHEELS=${WHEELS:-.gpu_wheels}
SITE=${SITE:-.gpu_site}
export PYTHONPATH="src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
if [ -d "$WHEELS" ]; then
  grep -v '^\s*#' benchmarks/gpu_wheels.txt | while read -r requirement _; do
    [ -n "$requirement" ] || continue
    if ! "$PYTHON" - "$requirement" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement
need = Requirement(sys.argv[1])
try:
    sys.exit(0 if need.specifier.contains(version(need.name), prereleases=True) else 1)
except PackageNotFoundError:
    sys.exit(1)
PY
    then
      echo "gpu_check.sh: installing $requirement from $WHEELS into $SITE"
      "$PYTHON" -m pip install -q --no-deps --no-index --find-links "$WHEELS" --target "$SITE" "$requirement"
    fi
  done
fi
exec timeout "${LIMIT:-480}" "$PYTHON" benchmarks/gpu_check.py "$@"
