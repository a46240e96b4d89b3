"""The shared CLI helpers: outputs refused before any work, JSON and HTML written all or
none, one option vocabulary (the Typer aliases carry the documented flags)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import ClassVar

import pytest
import typer

from recscope.cli import common
from recscope.cli.common import check_outputs, write_outputs
from recscope.errors import OutputError
from recscope.results import Effect, Result


@dataclasses.dataclass
class _R(Result):
    kind: ClassVar[str] = "toy"
    title: ClassVar[str] = "Toy"
    value: float = 0.5

    def effects(self) -> list[Effect]:
        return [Effect("m", self.value, 0.4, 0.6, 0.05, 0.01, 100, {"share": 0.25})]


def test_outputs_are_refused_before_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         read_only_dir: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.json").write_text("{}")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    cases = [
        ((tmp_path / "mine.json",), {}, "mine.json"),
        ((tmp_path / "a.json", tmp_path / "a.json"), {}, "two outputs"),
        ((tmp_path / "full",), {}, "is a folder"),
        ((), {"folder": tmp_path / "full"}, "--force"),
        ((), {"folder": Path("."), "force": True}, "current folder"),
        ((), {"folder": tmp_path / "mine.json"}, "is a file"),
        ((read_only_dir / "r.json",), {}, "cannot write"),
        ((), {"tracking": str(read_only_dir / "store")}, "tracking store"),
    ]
    for files, kwargs, words in cases:
        with pytest.raises(OutputError, match=words):
            check_outputs(*files, **kwargs)
    check_outputs(tmp_path / "new.json", folder=tmp_path / "full", force=True,
                  tracking=str(read_only_dir / "store"), track=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "mine.json", "read-only"]


def test_write_outputs_all_or_none(tmp_path: Path) -> None:
    (tmp_path / "r.html").write_text("the user's page")
    with pytest.raises(OutputError, match=r"r\.html"):
        write_outputs(_R(), tmp_path / "r.json", tmp_path / "r.html")
    assert not (tmp_path / "r.json").exists()
    write_outputs(_R(), tmp_path / "s.json", tmp_path / "s.html")
    row = json.loads((tmp_path / "s.json").read_text())
    assert row["kind"] == "toy" and row["value"] == 0.5
    assert "25%" in (tmp_path / "s.html").read_text()


def test_shared_options_carry_their_flags() -> None:
    app = typer.Typer()

    @app.command()
    def cmd(out: common.OutDir, force: common.Force = False, json_out: common.JsonOut = None,
            html_out: common.HtmlOut = None, tracking: common.Tracking = None) -> None:
        """A command using every shared option."""

    @app.command()
    def other() -> None:
        """A second command, so that ``cmd`` is a subcommand."""

    params = {p.name: p for p in typer.main.get_command(app).commands["cmd"].params}
    flags = {name: tuple(p.opts) for name, p in params.items()}
    assert flags == {"out": ("--out",), "force": ("--force",), "json_out": ("--json",),
                     "html_out": ("--html",), "tracking": ("--tracking",)}
    assert all(p.help for p in params.values())
