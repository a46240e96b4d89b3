"""The launch report renders in headless Chromium: no console error, no network request,
every plot drawn as SVG."""

from __future__ import annotations

from pathlib import Path

import pytest

from recscope.launch import decide, load_experiment, load_launch
from tests.launch._data import ROOT, experiment_dir

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def render(html_path: Path) -> tuple[list[str], list[str], int, int, str]:
    """Console errors, requests other than the page itself, plots, plots with an SVG,
    and the page's text."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium")
    errors: list[str] = []
    requests: list[str] = []
    url = html_path.resolve().as_uri()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url) if r.url != url else None)
        page.goto(url)
        page.wait_for_timeout(1500)
        plots = page.locator(".plotly-graph-div").count()
        with_svg = page.locator(".plotly-graph-div svg.main-svg").count()
        drawn = page.evaluate("""() => [...document.querySelectorAll('.plotly-graph-div')]
            .filter(d => d.querySelector('svg.main-svg')).length""")
        text = page.inner_text("body")
        browser.close()
    assert with_svg >= drawn
    return errors, requests, plots, drawn, text


def test_launch_report_renders_in_chromium(tmp_path: Path) -> None:
    folder = experiment_dir(tmp_path / "exp", n=20000, saves_lift=1.15)
    cfg = load_launch(ROOT / "examples" / "launch.toml")
    dec = decide(cfg, load_experiment(folder, trees=cfg.tree))
    out = tmp_path / "launch.html"
    dec.save(out)
    errors, requests, plots, drawn, text = render(out)
    assert errors == []
    assert requests == []
    assert plots >= 3 and drawn == plots
    assert f"Decision: {dec.decision.upper()}" in text
    assert "Ground truth" in text and "Per surface" in text


def test_report_on_a_simulator_run_renders(tmp_path: Path) -> None:
    """`launch decide` + `launch report` on what `recscope simulate --out` writes (a tiny
    built-in world), through the CLI, then rendered in Chromium."""
    import tomllib

    from recscope.cli import run
    from recscope.sim import parse_experiment, run_experiment

    metrics = tmp_path / "sim_metrics.toml"  # the simulator's metrics file takes no trees yet
    metrics.write_text((ROOT / "examples" / "launch_metrics.toml").read_text()
                       .split("[trees.")[0])
    spec = parse_experiment(tomllib.loads(f"""
name = "tiny"
seed = 5
days = 3
warmup_days = 1
metrics = "{metrics}"
[world]
scale = 0.05
[policy]
retriever = "embedding"
ranker = "affinity"
[[experiment]]
name = "ranker"
[experiment.variants.control]
[experiment.variants.treatment]
ranker = "affinity_quality"
"""))
    run_experiment(spec, tmp_path / "sim")
    decision, page = tmp_path / "decision.json", tmp_path / "launch.html"
    assert run(["launch", "decide", str(ROOT / "examples" / "launch.toml"), "--experiment",
                str(tmp_path / "sim"), "--metrics", str(ROOT / "examples" /
                                                        "launch_metrics.toml"),
                "--json", str(decision)]) == 0
    assert run(["launch", "report", str(decision), "--out", str(page)]) == 0
    errors, requests, plots, drawn, text = render(page)
    assert errors == [] and requests == []
    assert plots >= 3 and drawn == plots
    assert "Ground truth" in text and "Metric tree" in text


def test_decompose_and_portfolio_pages_render(tmp_path: Path) -> None:
    from recscope.cli import run

    folder = experiment_dir(tmp_path / "exp", n=5000, saves_lift=1.15)
    trees, decision = tmp_path / "trees.html", tmp_path / "d.json"
    pf = tmp_path / "portfolio.html"
    assert run(["launch", "decompose", "--assignments", str(folder / "assignments.parquet"),
                "--events", str(folder / "events.parquet"), "--metrics",
                str(folder / "metrics.toml"), "--html", str(trees)]) == 0
    assert run(["launch", "decide", str(ROOT / "examples" / "launch.toml"), "--experiment",
                str(folder), "--json", str(decision)]) == 0
    assert run(["launch", "portfolio", str(decision), "--all", "--html", str(pf)]) == 0
    for page in (trees, pf):
        errors, requests, plots, drawn, _ = render(page)
        assert errors == [] and requests == []
        assert plots >= 1 and drawn == plots
