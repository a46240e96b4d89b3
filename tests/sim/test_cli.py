"""``recscope world generate`` on a small world (the demo is tested in tests/sim_env)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recscope.cli import world as world_cli
from recscope.errors import ConfigError

SMALL = ("n_users = 300\nn_items = 250\nn_creators = 30\nn_impressions = 8000\n"
         "n_days = 8\n")


@pytest.fixture
def small_toml(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL, encoding="utf-8")
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_world_generate_writes_a_deterministic_world(tmp_path: Path, small_toml: Path) -> None:
    runner = CliRunner()
    for name in ("a", "b"):
        result = runner.invoke(world_cli.app, ["generate", "--config", str(small_toml),
                                               "--seed", "3", "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert "world written" in result.output
    a, b = tmp_path / "a", tmp_path / "b"
    assert json.loads((a / "config.json").read_text())["seed"] == 3
    assert json.loads((a / "config.json").read_text())["n_users"] == 300
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert all(_sha(a / n) == _sha(b / n) for n in names)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_world_generate_bad_key_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("n_users = 300\n[sessions]\nmean_request = 2.0\n", encoding="utf-8")
    result = CliRunner().invoke(world_cli.app, ["generate", "--config", str(bad), "--out",
                                                str(tmp_path / "w")])
    assert isinstance(result.exception, ConfigError)
    assert result.exception.key == "sessions.mean_request"
    # through the real entry point: exit code 2, one line naming the key and the file
    env = {**os.environ, "COLUMNS": "300"}
    proc = subprocess.run([sys.executable, "-c", "from recscope.cli import main; main()",
                           "world", "generate", "--config", str(bad), "--out",
                           str(tmp_path / "w")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1
    assert "sessions.mean_request" in lines[0] and str(bad) in lines[0]
    assert not (tmp_path / "w").exists()
