#!/usr/bin/env bash
# Build the artifact spark-submit ships to the driver and executors: a zip of the `recspark/`
# package (`--py-files` takes .py, .zip and .egg files, not wheels).
#
#   deploy/build-zip.sh [OUTPUT]        default OUTPUT: <repo>/build/recspark.zip
#
# Prints the path of the zip. Works from any directory.
#
# The zip is reproducible (sorted entries, fixed timestamps, no __pycache__), and it is
# replaced atomically and only when its content changed: cron or Airflow may start one job
# while another job that already runs reads the same file (Python's zipimport re-opens the
# file by name), so the file must never be half-written nor change under a running job
# without a reason.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/build/recspark.zip}"
PYTHON="${RECSPARK_BUILD_PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    # Any Python 3 can build the zip; prefer the project's virtualenv.
    if [[ -x "${VENV:-$ROOT/.venv}/bin/python" ]]; then
        PYTHON="${VENV:-$ROOT/.venv}/bin/python"
    else
        PYTHON="$(command -v python3)"
    fi
fi

mkdir -p "$(dirname "$OUT")"
"$PYTHON" - "$ROOT/recspark" "$OUT" <<'PY'
import os
import sys
import tempfile
import zipfile
from pathlib import Path

package, out = Path(sys.argv[1]), Path(sys.argv[2])
if not (package / "__init__.py").is_file():
    sys.exit(f"build-zip: {package} is not a Python package")
files = sorted(
    p
    for p in package.rglob("*")
    if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
)
fd, tmp = tempfile.mkstemp(prefix=".recspark-", suffix=".zip", dir=out.parent)
os.close(fd)
try:
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            info = zipfile.ZipInfo(
                str(path.relative_to(package.parent)), date_time=(1980, 1, 1, 0, 0, 0)
            )
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    if out.is_file() and out.read_bytes() == Path(tmp).read_bytes():
        os.unlink(tmp)
    else:
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
finally:
    if os.path.exists(tmp):
        os.unlink(tmp)
print(out)
PY
