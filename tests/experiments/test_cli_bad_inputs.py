"""Bad inputs to `experiment analyze`, `experiment power` and `attribute`: exit code 2, one
line naming the file / column / option, and nothing written (no output, no tracking run)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

METRICS = '[metrics.m]\nkind = "mean"\ncolumn = "x"\n'


def _inputs(folder: Path) -> None:
    rng = np.random.default_rng(0)
    n = 400
    pd.DataFrame({"user_id": np.arange(n), "variant": rng.choice(["control", "t"], n),
                  "layer": "ranker"}).to_parquet(folder / "a.parquet")
    pd.DataFrame({"user_id": rng.integers(0, n, 2000), "x": rng.exponential(size=2000)}
                 ).to_parquet(folder / "e.parquet")
    (folder / "m.toml").write_text(METRICS)


def _write(name: str, content: bytes | str | Callable[[Path], None]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path
    return make


def _events_with(column: object) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        pd.DataFrame({"user_id": [1, 2, 3, 4], "x": column}).to_parquet(path)
    return make


# (case id, files to create: name -> content, arguments (placeholders {name}), needles)
CASES: list[tuple[str, dict[str, object], list[str], list[str]]] = [
    ("missing events file", {}, ["--events", "{dir}/nope.parquet"], ["nope.parquet",
                                                                    "not found"]),
    ("directory for the events file", {"folder/keep.txt": "x"}, ["--events", "{dir}/folder"],
     ["folder", "without Parquet"]),
    ("empty events file", {"empty.csv": b""}, ["--events", "{dir}/empty.csv"],
     ["empty.csv", "empty"]),
    ("corrupt Parquet", {"bad.parquet": b"PAR1 garbage"}, ["--events", "{dir}/bad.parquet"],
     ["bad.parquet", "cannot read"]),
    ("non-UTF-8 CSV", {"latin.csv": "user_id,x\n1,caf\xe9\n".encode("latin-1")},
     ["--events", "{dir}/latin.csv"], ["latin.csv"]),
    ("text in a numeric column", {"text.csv": "user_id,x\n1,2.5\n2,n/a\n3,1\n"},
     ["--events", "{dir}/text.csv"], ["text.csv", "'x'", "'n/a'"]),
    ("unit column missing (wrong header)", {"hdr.csv": "uid,x\n1,2.5\n2,3\n"},
     ["--events", "{dir}/hdr.csv"], ["hdr.csv", "'user_id'"]),
    ("NaN in the metric", {"nan.parquet": _events_with([1.0, np.nan, 2.0, 3.0])},
     ["--events", "{dir}/nan.parquet"], ["nan.parquet", "'x'", "NULL/NaN", "unit 2"]),
    ("null in the metric", {"null.parquet": _events_with([1.0, None, 2.0, 3.0])},
     ["--events", "{dir}/null.parquet"], ["null.parquet", "'x'", "NULL/NaN"]),
    ("infinity in the metric", {"inf.parquet": _events_with([1.0, np.inf, 2.0, 3.0])},
     ["--events", "{dir}/inf.parquet"], ["inf.parquet", "'x'", "infinite"]),
    ("missing metrics file", {}, ["--metrics", "{dir}/nope.toml"], ["nope.toml",
                                                                   "not found"]),
    ("directory for the metrics file", {"mdir/x": "x"}, ["--metrics", "{dir}/mdir"],
     ["mdir", "folder"]),
    ("empty metrics file", {"empty.toml": ""}, ["--metrics", "{dir}/empty.toml"],
     ["empty.toml", "metrics"]),
    ("duplicate metric in the TOML", {"dup.toml": METRICS + METRICS},
     ["--metrics", "{dir}/dup.toml"], ["dup.toml"]),
    ("string where a boolean is expected", {"seq.toml": 'sequential = "no"\n' + METRICS},
     ["--metrics", "{dir}/seq.toml"], ["seq.toml", "sequential"]),
    ("unknown engine", {}, ["--engine", "oracle"], ["--engine", "oracle"]),
    ("--json is a folder", {"out/keep": "x"}, ["--json", "{dir}/out"], ["out", "folder"]),
    ("--html under a file", {"plain": "x"}, ["--html", "{dir}/plain/card.html"],
     ["plain", "is a file"]),
]

COMMANDS = {
    "analyze": ["experiment", "analyze", "--assignments", "{dir}/a.parquet"],
    "power": ["experiment", "power", "--units", "{dir}/a.parquet"],
    "attribute": ["attribute", "--assignments", "{dir}/a.parquet", "--component", "ranker"],
}


def _run(args: list[str], monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from recscope.cli import main

    monkeypatch.setattr("sys.argv", ["recscope", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return int(info.value.code or 0), capsys.readouterr().err


def _snapshot(folder: Path) -> set[str]:
    """Every path under ``folder`` but an empty tracking-store folder (the store check
    may create the folder; no database or run may appear in it)."""
    store = folder / "store"
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if not (p == store and not any(store.iterdir()))}


def _args(command: str, folder: Path, override: list[str]) -> list[str]:
    base = {"--events": str(folder / "e.parquet"), "--metrics": str(folder / "m.toml"),
            "--tracking": str(folder / "store")}
    extra: list[str] = []
    for opt, value in zip(override[::2], override[1::2], strict=True):
        value = value.format(dir=folder)
        if opt in base:
            base[opt] = value
        else:
            extra += [opt, value]
    cmd = [a.format(dir=folder) for a in COMMANDS[command]]
    return cmd + [x for kv in base.items() for x in kv] + extra


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(("case", "files", "override", "needles"), CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        command: str, case: str, files: dict[str, object], override: list[str],
        needles: list[str]) -> None:
    _inputs(tmp_path)
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        _write(name, content)(tmp_path)  # type: ignore[arg-type]
    before = _snapshot(tmp_path)
    code, err = _run(_args(command, tmp_path, override), monkeypatch, capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (case, err)
    assert _snapshot(tmp_path) == before, "something was written"


@pytest.mark.parametrize(("args", "needles"), [
    (["attribute", "--bootstrap", "0"], ["--bootstrap", "got 0"]),
    (["attribute", "--bootstrap", "-1"], ["--bootstrap", "got -1"]),
    (["attribute", "--seed", "-3"], ["--seed"]),
    (["power", "--alpha", "2"], ["--alpha", "(0, 1)"]),
    (["power", "--power", "1.5"], ["--power"]),
    (["power", "--variants", "1"], ["--variants"]),
    (["power", "--treatment-share", "0"], ["--treatment-share"]),
    (["power", "--units-per-day", "-5"], ["--units-per-day"]),
    (["power", "--mde", "0"], ["--mde"]),
    (["power", "--days", "7"], ["--days"]),
])
def test_out_of_range_options_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str], args: list[str],
                                        needles: list[str]) -> None:
    _inputs(tmp_path)
    before = _snapshot(tmp_path)
    command, *override = args
    code, err = _run(_args(command, tmp_path, override), monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert _snapshot(tmp_path) == before


def test_duplicate_assignments_are_counted_not_fatal(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A unit assigned to two variants is excluded and shown in the banner (exit 0)."""
    _inputs(tmp_path)
    a = pd.read_parquet(tmp_path / "a.parquet")
    dup = a.iloc[[0]].assign(variant=lambda d: np.where(d.variant == "t", "control", "t"))
    pd.concat([a, dup]).to_parquet(tmp_path / "a.parquet")
    code, _ = _run(_args("analyze", tmp_path, ["--json", "{dir}/card.json"]), monkeypatch,
                   capsys)
    assert code == 0
    import json

    card = json.loads((tmp_path / "card.json").read_text())
    assert card["data_checks"]["units_in_several_variants"] == 1


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_has_an_example(command: str, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from recscope.cli import main

    words = {"analyze": ["experiment", "analyze"], "power": ["experiment", "power"],
             "attribute": ["attribute"]}[command]
    monkeypatch.setattr("sys.argv", ["recscope", *words, "--help"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0
    assert "Example" in capsys.readouterr().out
