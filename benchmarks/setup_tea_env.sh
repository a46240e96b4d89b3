#!/usr/bin/env bash
# A separate Python 3.12 environment for tea-tasting (it needs Python >= 3.12; recscope's
# own .venv is 3.11). Creates benchmarks/out/tea-venv (git-ignored).
# Usage: bash benchmarks/setup_tea_env.sh [PYTHON3.12]
set -euo pipefail
cd "$(dirname "$0")"
PY="${1:-$(command -v python3.12 || true)}"
if [ -z "$PY" ] && [ -x "$HOME/.pyenv/versions/3.12.1/bin/python" ]; then
  PY="$HOME/.pyenv/versions/3.12.1/bin/python"
fi
if [ -z "$PY" ]; then
  echo "no python3.12 found: install one (e.g. apt-get install python3.12 or pyenv) and pass its path" >&2
  exit 1
fi
mkdir -p out
"$PY" -m venv out/tea-venv
out/tea-venv/bin/pip install --quiet "tea-tasting==2.0.0" "duckdb>=1.1" pyarrow pandas
out/tea-venv/bin/python -c "import tea_tasting, sys; print('tea-tasting', tea_tasting.__version__, 'on', sys.version.split()[0])"
