"""``recscope experiment design-compare``: outputs, and bad designs refused in one line
before any output is written."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv

from tests.cli.inputs import invoke

TOML = Path(__file__).parent / "design_compare.toml"
KEYS = {"design", "metric", "estimate", "ci_low", "ci_high", "truth", "bias", "rmse",
        "coverage", "mde", "design_effect"}


def test_design_compare_writes_designs_json_and_the_page(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = invoke(["experiment", "design-compare", str(TOML), "--reps", "2",
                                "--out", str(out), "--html", str(tmp_path / "p.html")],
                               tmp_path)
    assert code == 0, err or stdout
    rows = json.loads((out / "designs.json").read_text())
    assert {r["design"] for r in rows} == {"unit", "cluster:regions",
                                           "switchback:24h/6hx8"}
    assert all(KEYS <= set(r) for r in rows)
    ctr = {r["design"]: r for r in rows if r["metric"] == "ctr"}
    assert ctr["unit"]["design_effect"] == 1.0
    assert ctr["cluster:regions"]["truth"] == ctr["unit"]["truth"]
    assert all(r["reps"] == 2 and 0 <= r["coverage"] <= 1 and r["mde"] > 0 for r in rows)
    cautions = json.loads((out / "comparison.json").read_text())["cautions"]
    assert any(c.startswith("switchback:24h/6hx8") and "across slices" in c for c in cautions)
    html = (out / "designs.html").read_text()
    assert "plotly-graph-div" in html and html == (tmp_path / "p.html").read_text()
    # a second run into the same folder needs --force
    code, _, err = invoke(["experiment", "design-compare", str(TOML), "--reps", "1",
                           "--out", str(out)], tmp_path)
    assert code == 2 and "--force" in err


def _bad(tmp_path: Path, extra: str, *args: str) -> tuple[int, str]:
    f = tmp_path / "bad.toml"
    text = TOML.read_text().split("[design]")[0]
    f.write_text(text + extra)
    out = tmp_path / "out"
    code, _, err = invoke(["experiment", "design-compare", str(f), "--reps", "1",
                          "--out", str(out), *args], tmp_path)
    assert not out.exists()  # nothing half-written
    assert len(err.strip().splitlines()) == 1, err
    return code, err


def test_bad_designs_are_one_line_exit_2(tmp_path: Path) -> None:
    code, err = _bad(tmp_path, '[design]\nkind = "switchback"\nslice_hours = 120\n')
    assert code == 2 and "bad.toml" in err and "slice_hours" in err and "longer" in err
    n_users = 800  # scale 0.04 of the built-in world
    pcsv.write_csv(pa.table({"follower": [0, 1, n_users + 7], "followee": [1, 2, 3]}),
                   tmp_path / "g.csv")
    code, err = _bad(tmp_path, '[design]\nkind = "cluster"\ngraph = "g.csv"\n')
    assert code == 2 and "g.csv" in err and "follower" in err and "row 3" in err
    pcsv.write_csv(pa.table({"unit_id": [*range(n_users), 5],
                             "cluster_id": [u % 20 for u in range(n_users)] + [9]}),
                   tmp_path / "c.csv")
    code, err = _bad(tmp_path, '[design]\nkind = "cluster"\ngraph = "c.csv"\n')
    assert code == 2 and "c.csv" in err and "cluster_id" in err and "two clusters" in err
    pcsv.write_csv(pa.table({"unit_id": list(range(n_users)),
                             "cluster_id": [u % 3 for u in range(n_users)]}),
                   tmp_path / "c3.csv")
    code, err = _bad(tmp_path, '[design]\nkind = "cluster"\ngraph = "c3.csv"\n')
    assert code == 2 and "c3.csv" in err and "2 clusters per arm" in err
    code, err = _bad(tmp_path, '[design]\nkind = "cluster"\ngraph = "social"\n')
    assert code == 2 and "design.graph" in err
    code, err = _bad(tmp_path, "", "--reps", "0")
    assert code == 2 and "--reps" in err
