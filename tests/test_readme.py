"""The README's quickstarts run as written (issue 12 item 8, issue 13 item 6).

The bash block under "Quickstart (CLI)" runs line by line, and the Python block under
"Quickstart (Python)" as one script, in a temporary project folder laid out like the real one
(``.venv`` and ``examples`` linked from the repository, the data at ``../shared/data``), with
the default tracking store (``MLFLOW_TRACKING_URI`` unset): every command must exit 0 and every
run must land in the one store ``.recscope/mlflow.db``.
"""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA, data_path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def block(section: str, language: str) -> str:
    """The first ``language`` code block after the heading ``section``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}")
    m = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert m is not None, f"no {language} block under '{section}'"
    return m.group(1)


def shell_lines(code: str) -> list[str]:
    """Logical lines of a bash block: continuations joined, comments and blanks dropped."""
    lines: list[str] = []
    buf = ""
    for raw in code.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        line = (buf + line).strip()
        buf = ""
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with the repository's .venv and examples, data at ../shared/data."""
    for name in ("ml-100k", "hillstrom", "obd"):
        data_path(name)
    proj = tmp_path / "project"
    proj.mkdir()
    (proj / ".venv").symlink_to(ROOT / ".venv")
    (proj / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(DATA.resolve())
    return proj


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["COLUMNS"] = "120"
    return env


def test_block_extraction() -> None:
    lines = shell_lines("R=x\n$R a \\\n  --b c\n# note\n\n$R d  # tail\n")
    assert lines == ["R=x", "$R a    --b c", "$R d  # tail"]
    assert "recscope.evaluate" in block("Quickstart (Python)", "python")


@pytest.mark.slow
def test_cli_quickstart_runs_as_written(project: Path) -> None:
    lines = shell_lines(block("Quickstart (CLI)", "bash"))
    assert any("data split" in ln for ln in lines) and any("evaluate" in ln for ln in lines)
    assignments: list[str] = []
    for line in lines:
        if re.fullmatch(r"[A-Za-z_]\w*=\S+", line):
            assignments.append(line)
            continue
        script = "set -euo pipefail\n" + "\n".join(assignments) + "\n" + line
        res = subprocess.run(["bash", "-c", script], cwd=project, env=_env(),
                             capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, (f"README line failed (exit {res.returncode}): {line}\n"
                                     f"{res.stderr[-3000:]}")
        assert "Traceback" not in res.stderr, line
    store = project / ".recscope" / "mlflow.db"
    assert store.exists(), "the runs did not land in the project store .recscope/mlflow.db"
    with sqlite3.connect(store) as con:
        commands = {r[0] for r in con.execute(
            "SELECT value FROM tags WHERE key = 'recscope.command'")}
    ran = {shlex.split(ln)[1] for ln in lines if ln.startswith("$R ")}
    tracked = {"train", "recommend", "evaluate", "simulate", "attribute", "ope"} & ran
    assert tracked <= {c.split(".")[0].split(" ")[0] for c in commands}, commands


@pytest.mark.slow
def test_python_quickstart_runs_as_written(project: Path) -> None:
    code = block("Quickstart (Python)", "python")
    (project / "quickstart.py").write_text(code, encoding="utf-8")
    res = subprocess.run([sys.executable, "quickstart.py"], cwd=project, env=_env(),
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ndcg@10" in res.stdout and "Mens E-Mail" in res.stdout


def test_package_map_lists_what_exists() -> None:
    """The README's map names every package of src/recscope and nothing that does not exist
    (empty placeholder packages do not count)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Map of the packages"):text.index("## Documentation")]
    listed = {n for row in re.findall(r"^\| (.+?) \|", section, re.M)
              for n in re.findall(r"`(\w+)`", row)}
    src = ROOT / "src" / "recscope"
    real = {p.name for p in src.iterdir() if (p / "__init__.py").exists()
            and any(f.name != "__init__.py" for f in p.glob("*.py"))}
    modules = {p.stem for p in src.glob("*.py") if p.stem != "__init__"}
    assert real <= listed, f"packages missing from the README map: {sorted(real - listed)}"
    assert listed <= real | modules, f"listed but absent: {sorted(listed - real - modules)}"
    for doc in re.findall(r"\]\((docs/[\w.-]+)\)", text):
        assert (ROOT / doc).exists(), doc
