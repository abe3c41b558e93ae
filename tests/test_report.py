"""edgepart report: the HTML page opens in a real headless browser with every section and image;
the Markdown and summary tables say what the rows say."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from edgepart.cli import main
from edgepart.instance import load_instance
from edgepart.pareto import pareto_front
from edgepart.report import (
    SECTIONS,
    gap_matrix,
    html_report,
    markdown_report,
    method_summary,
    pairwise,
)
from edgepart.sweep import Task, as_table, canonical_options, run_task

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "instances" / "suite"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _table(names: list[str], methods: list[str]) -> pd.DataFrame:
    """Rows of real runs (in this process), with the manifest's optima for the gaps."""
    from edgepart.suite import load_manifest

    manifest = load_manifest(SUITE / "manifest.json")
    rows = []
    for name in names:
        entry = manifest.entry(name)
        assert entry is not None
        for method in methods:
            for objective in ("bottleneck", "latency"):
                task = Task(name, str(SUITE / entry.file), method, objective,
                            canonical_options({}), 10.0, 1, entry.optimum(objective),
                            entry.family)
                rows.append(json.loads(run_task(task.to_json())))
    return as_table(pd.DataFrame(rows))


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return _table(["tv_vgg16_lab4", "pd_alexnet_edge8", "msr_bert24"], ["greedy", "even", "dp"])


def test_summary_counts_by_hand() -> None:
    # two runs of one method: gaps 0 and 50 against optimum 2; one more run without a plan
    base = {"instance": "a", "method": "m", "objective": "bottleneck", "options": "{}",
            "status": "feasible", "optimum_s": 2.0, "wall_s": 1.0, "backend": "m"}
    rows = [{**base, "objective_s": 2.0, "gap_pct": 0.0},
            {**base, "instance": "b", "objective_s": 3.0, "gap_pct": 50.0},
            {**base, "instance": "c", "status": "none", "objective_s": math.nan,
             "gap_pct": math.nan, "wall_s": 4.0}]
    summary = method_summary(as_table(pd.DataFrame(rows))).iloc[0]
    assert summary["runs"] == 3 and summary["plans"] == 2 and summary["no plan"] == 1
    assert summary["share optimal %"] == pytest.approx(100 / 3)  # 1 of the 3 known runs
    assert summary["mean gap %"] == 25 and summary["max gap %"] == 50
    assert summary["mean wall s"] == 2


def test_pairwise_by_hand() -> None:
    # A: 1 and 3, B: 2 and 3 -> ratios 0.5 and 1: geometric mean sqrt(0.5), A lower by 50% and
    # 0% (mean 25%), one lower and one equal; a run where B has no plan is left out
    base = {"objective": "bottleneck", "options": "{}", "status": "feasible"}
    rows = [{**base, "instance": i, "method": m, "objective_s": v}
            for i, m, v in (("x", "A", 1.0), ("x", "B", 2.0), ("y", "A", 3.0), ("y", "B", 3.0),
                            ("z", "A", 1.0), ("z", "B", math.nan))]
    row = pairwise(as_table(pd.DataFrame(rows)), [("A", "B")]).iloc[0]
    assert row["runs"] == 2
    assert row["A / B (geometric mean)"] == pytest.approx(math.sqrt(0.5))
    assert row["A lower by % (mean)"] == pytest.approx(25)
    assert (row["A lower"], row["equal"], row["A higher"]) == (1, 1, 0)


def test_markdown_matches_rows(table: pd.DataFrame) -> None:
    text = markdown_report(table)
    assert "### Each method against the proven optima" in text
    matrix = gap_matrix(table, "bottleneck")
    for name in matrix.index:
        row = table[(table["instance"] == name) & (table["method"] == "dp")
                    & (table["objective"] == "bottleneck")].iloc[0]
        assert matrix.loc[name, "dp"] == row["gap_pct"]
        assert f"| {name} |" in text


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, table: pd.DataFrame) -> Path:
    """``edgepart report`` on ``table`` with the Pareto front of one instance."""
    tmp_path = tmp_path_factory.mktemp("report")
    front = pareto_front(load_instance(SUITE / "tv_vgg16_lab4.json"), "auto", time_limit=60)
    pareto_file = tmp_path / "front.json"
    pareto_file.write_text(json.dumps(front.to_dict()))
    table_file = tmp_path / "table.parquet"
    table.to_parquet(table_file)
    out = tmp_path / "report.html"
    assert main(["report", str(table_file), "--out", str(out), "--pareto",
                 str(pareto_file)]) == 0
    return out


def test_page_is_self_contained(page: Path, table: pd.DataFrame) -> None:
    text = page.read_text()
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in text
    assert not re.search(r"(src|href)=\"(?!data:)", text)  # every image inline, no links out
    assert "http://" not in text and "https://" not in text
    families = set(table["family"])
    assert all(f"<h3>{f}</h3>" in text for f in families)


def test_page_in_headless_chromium(tmp_path: Path, page: Path, table: pd.DataFrame) -> None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("no browser: /usr/bin/chromium and /usr/bin/chromedriver are not installed "
                    "(apt-get install chromium chromium-driver; .ci/run does it)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(page.as_uri())
        headings = [h.text for h in driver.find_elements("tag name", "h2")]
        assert headings == list(SECTIONS)
        images = driver.find_elements("tag name", "img")
        # gap boxes, gap vs size, times, one Pareto front, one plan per family
        assert len(images) == 3 + 1 + len(set(table["family"]))
        widths = [driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", img) for img in images]
        assert all(w and w > 0 for w in widths), widths
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        rows = driver.find_elements("css selector", "section table tbody tr")
        assert len(rows) == table.groupby(["method", "objective"]).ngroups
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_report_cli_bad_table_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    bad = tmp_path / "t.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["report", str(bad), "--markdown"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a sweep table" in err[0]
    assert main(["report", str(tmp_path / "none.parquet"), "--markdown"]) == 2
    assert main(["report", str(bad)]) == 2  # nothing asked for


def test_html_without_pareto_or_rows_says_so() -> None:
    text = html_report(as_table(pd.DataFrame()))
    assert "No Pareto table given" in text and "No runs with a value to draw" in text
