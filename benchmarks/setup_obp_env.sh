#!/usr/bin/env bash
# A separate Python 3.10 environment for the Open Bandit Pipeline (obp needs Python < 3.11;
# recscope's own .venv is 3.11). Creates benchmarks/out/obp-venv (git-ignored).
# obp is installed without its dependency on torch (no CPU torch wheel for 3.10 here);
# benchmarks/ope.py puts a small stand-in torch module on its path, and none of the
# estimators it compares use torch.
# Usage: bash benchmarks/setup_obp_env.sh [PYTHON3.10]
set -euo pipefail
cd "$(dirname "$0")"
PY="${1:-$(command -v python3.10 || true)}"
if [ -z "$PY" ] && [ -x "$HOME/.pyenv/versions/3.10.13/bin/python" ]; then
  PY="$HOME/.pyenv/versions/3.10.13/bin/python"
fi
if [ -z "$PY" ]; then
  echo "no python3.10 found: install one (e.g. pyenv) and pass its path" >&2
  exit 1
fi
mkdir -p out
"$PY" -m venv out/obp-venv
out/obp-venv/bin/pip install --quiet "numpy<2" "pandas<2.2" "scikit-learn<1.4" "scipy<1.16" \
  matplotlib seaborn tqdm pyyaml lightgbm
out/obp-venv/bin/pip install --quiet --no-deps "obp==0.5.7"
out/obp-venv/bin/python -c "import sys; print('obp env on', sys.version.split()[0])"
