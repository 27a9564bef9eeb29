"""Why the report draws its own charts: plotly.js inlined (from the PyPI ``plotly`` wheel) versus the report page.

Baseline in the same run: a report made by ``logs report`` (the whole page: every chart, tables, filters).
Candidate: a page with only ``plotly.min.js`` inlined drawing the report's two heat maps (50 species x 120
days, 50 x 24 hours). Both are opened in headless Chromium three times; size and time to drawn are printed.

    python3 -m pip install --no-deps --target /tmp/plotly_pkg plotly
    python benchmarks/report_chart_library.py --plotly-js /tmp/plotly_pkg/plotly/package_data/plotly.min.js \
        --report report.html
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

RUNS = 3
SPECIES, DAYS, HOURS = 50, 120, 24


def plotly_page(plotly_js: Path, out: Path) -> Path:
    rng = np.random.default_rng(0)
    days, hours = rng.random((SPECIES, DAYS)).round(3).tolist(), rng.random((SPECIES, HOURS)).round(3).tolist()
    out.write_text(f"""<html><body><div id=a></div><div id=b></div><script>{plotly_js.read_text()}</script>
<script>Plotly.newPlot('a', [{{z: {json.dumps(days)}, type: 'heatmap'}}]);
Plotly.newPlot('b', [{{z: {json.dumps(hours)}, type: 'heatmap'}}]).then(() => {{ document.body.dataset.done = 1; }});
</script></body></html>""", encoding="utf-8")
    return out


def load_times(pages: list[Path]) -> dict[Path, list[float]]:
    from playwright.sync_api import sync_playwright

    times: dict[Path, list[float]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        for path in pages:
            for _ in range(RUNS):
                page = browser.new_page()
                started = time.perf_counter()
                page.goto(path.resolve().as_uri())
                page.wait_for_selector("body[data-done], body[data-rendered]", timeout=120_000)
                times.setdefault(path, []).append(time.perf_counter() - started)
                page.close()
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plotly-js", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True, help="an HTML file written by `logs report`")
    args = parser.parse_args()
    from edge.ops.bench import machine_line

    print(machine_line(), flush=True)
    candidate = plotly_page(args.plotly_js, args.report.with_name("plotly-heatmaps.html"))
    times = load_times([args.report, candidate])
    base, other = np.median(times[args.report]), np.median(times[candidate])
    print(f"report page: {args.report.stat().st_size / 1e6:.2f} MB, drawn in {base:.2f} s (median of {RUNS})")
    print(f"plotly.js + 2 heat maps: {candidate.stat().st_size / 1e6:.2f} MB, drawn in {other:.2f} s "
          f"({other / base:.1f} x the whole report)")


if __name__ == "__main__":
    main()
