"""Reports and true convergence curves: ``l2obench report`` on a tiny run, trajectories to the last iteration."""
import html
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import pytest

from l2obench import runner
from l2obench.results import read_results

CONVERGED_SUITE = {
    "seeds": [0],
    "problems": [{"family": "lasso", "label": "tiny",
                  "settings": {"m": 20, "n": 40, "n_train": 16, "n_val": 16, "n_test": 48}}],
    "solvers": [{"solver": "fista", "label": "FISTA (converged)",
                 "params": {"lam": 0.05, "tol": 1e-6, "max_iter": 2000}}],
}


@pytest.mark.parametrize("chunk_bytes", [None, 4096])
def test_trajectory_runs_to_the_last_iteration_of_any_instance_and_ends_at_the_final_metric(
        cli, tmp_path, monkeypatch, chunk_bytes):
    if chunk_bytes:  # chunks of a few instances
        monkeypatch.setattr(runner, "TRAJECTORY_CHUNK_BYTES", chunk_bytes)
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(CONVERGED_SUITE))
    code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / "run"), "--no-progress")
    assert code == 0, out + err
    df = read_results([tmp_path / "run"])
    stops = df[df["metric"] == "stop_fraction"].set_index("iteration")["value"]
    assert len(stops) > 1, "instances should stop at different iterations"
    nmse = df[(df["metric"] == "nmse_db") & (df["split"] == "test") & (df["subset"] == "all")]
    curve = nmse.dropna(subset=["iteration"]).sort_values("iteration")
    final = nmse.loc[nmse["iteration"].isna(), "value"].item()
    if chunk_bytes is None:  # one chunk: the timed batch's very iterations
        assert curve["iteration"].max() == stops.index.max()  # the slowest instance's last iteration
        assert curve["value"].iloc[-1] == pytest.approx(final, abs=1e-9)
    else:  # smaller batches round differently: a stopping test may pass one iteration apart
        assert abs(curve["iteration"].max() - stops.index.max()) <= 2
        assert curve["value"].iloc[-1] == pytest.approx(final, abs=1e-3)
    first_stop = stops.index.min()
    assert math.isfinite(curve.set_index("iteration")["value"][first_stop])


SMOKE_SOLVERS = "FISTA (converged),LISTA (T=20),ISTA (T=20)"
SWEEP_SUITE = {
    "seeds": [0],
    "problems": [{"family": "lasso", "label": "tiny",
                  "settings": {"m": 10, "n": 20, "n_train": 16, "n_val": 16, "n_test": 24}}],
    "solvers": [{"solver": "ista", "label": "ISTA", "params": {"tol": 0.0, "lam": 0.05},
                 "sweep": {"max_iter": [5, 10, 20]}}],
}


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    """A two-seed smoke run on cs-tiny (a solver run to a tolerance, a learned and a fixed-depth one),
    and its report."""
    from l2obench.cli import main

    tmp = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("L2OBENCH_CACHE", str(tmp / "cache"))
        for args in (["run", "--suite", "smoke", "--scale", "smoke", "--solvers", SMOKE_SOLVERS,
                      "--problems", "cs-tiny", "--seeds", "0,1", "--results", str(tmp / "run"), "--no-progress"],
                     ["report", str(tmp / "run"), "-o", str(tmp / "report")]):
            try:
                main(args)
            except SystemExit as exc:
                assert exc.code in (0, None), args
    return tmp / "run", tmp / "report"


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images, self.tables, self._rows = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "table":
            self._rows = 0
        elif tag == "td" and self._rows is not None:
            self._rows += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self.tables.append(self._rows)
            self._rows = None


def _parse(index: Path) -> _Page:
    page = _Page()
    page.feed(index.read_text(encoding="utf-8"))
    return page


def test_report_figures_are_valid_pngs_tables_have_rows_and_nothing_is_remote(smoke_report):
    run, report = smoke_report
    index = report / "index.html"
    page = _parse(index)
    kinds = {Path(src).stem.split("-")[-2] for src in page.images}
    assert {"convergence", "stops", "levels", "training", "tuning"} <= kinds
    for src in page.images:
        data = (report / src).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), src
        assert matplotlib.image.imread(report / src).shape[0] > 100
    assert page.tables and all(rows for rows in page.tables)
    assert not [link for link in page.links if re.match(r"(https?:)?//", link)]
    assert "<script" not in index.read_text()
    rows = read_results([run])
    text = index.read_text()
    for column in ("git_commit", "device", "torch_version"):
        assert html.escape(rows[column].iloc[0]) in text
    assert "FISTA (converged)" in text and "conv" in text and "wall-clock" in text


def test_report_plots_the_metric_against_a_swept_value(cli, tmp_path):
    suite = tmp_path / "sweep.json"
    suite.write_text(json.dumps(SWEEP_SUITE))
    code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / "run"), "--no-progress")
    assert code == 0, out + err
    code, out, err = cli("report", str(tmp_path / "run"), "-o", str(tmp_path / "report"))
    assert code == 0, out + err
    page = _parse(tmp_path / "report" / "index.html")
    assert any("sweep-max_iter" in src for src in page.images)
    assert all((tmp_path / "report" / src).is_file() for src in page.images)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LOAD_CHECK = """<script>window.addEventListener("load", () => {
  const images = [...document.images], tables = [...document.querySelectorAll("table")];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  const empty = tables.filter(t => t.querySelectorAll("td").length === 0).length;
  document.title = `images=${images.length} broken=${broken} tables=${tables.length} empty=${empty}`;
});</script></body>"""


def _chromium(*args, profile):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium or chromium-browser binary on PATH "
                    "(Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium_with_every_image_loaded(smoke_report, tmp_path):
    _, report = smoke_report
    index = report / "index.html"
    checked = report / "loaded-check.html"  # the report plus a script reporting what loaded, in its title
    checked.write_text(index.read_text(encoding="utf-8").replace("</body>", LOAD_CHECK), encoding="utf-8")
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", checked.as_uri(), profile=tmp_path / "a").stdout
    state = dict(item.split("=") for item in re.search(r"<title>(.*?)</title>", dom).group(1).split())
    assert int(state["images"]) >= 3 and state["broken"] == "0", state
    assert int(state["tables"]) >= 2 and state["empty"] == "0", state

    shot = tmp_path / "report.png"
    _chromium("--window-size=1280,2400", f"--screenshot={shot}", index.as_uri(), profile=tmp_path / "b")
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1280)
    assert (pixels < 0.5).mean() > 0.01 and pixels.reshape(-1, 3).std(0).max() > 0.1  # text and figures, not blank


def test_a_convergence_curve_of_one_point_is_drawn(tmp_path):
    """DnCNN has one output, so its curve is one point: a line alone would leave it out of the figure. It is a
    level across the iteration panel (it has no iterations) and a point against wall-clock."""
    import numpy as np

    from l2obench import figures

    red = (1.0, 0.0, 0.0, 1.0)
    path = figures.convergence({"one output": ([1], [28.0]), "seven exits": (list(range(1, 8)), [20.0 + t for t in range(7)])},
                               {"one output": True, "seven exits": True}, "psnr", tmp_path / "c.png",
                               wall_clock={"one output": ([0.17], [28.0])},
                               colors={"one output": red, "seven exits": (0.0, 0.0, 1.0, 1.0)})
    image = matplotlib.image.imread(path)[..., :3]
    reddish = (image[..., 0] > 0.8) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)
    width = image.shape[1]
    legend = int(0.8 * width)  # the legend's handle, right of both panels, is red too
    left, right = reddish[:, : width // 2], reddish[:, width // 2: legend]
    def span(panel):  # how far across the panel the curve's colour reaches, in pixels
        columns = np.flatnonzero(panel.any(axis=0))
        return columns.max() - columns.min() if len(columns) else 0

    assert span(left) > 0.6 * left.shape[1], "the one output is not a level across the iteration panel"
    assert right.sum() > 10, "the one-point curve is missing from the wall-clock panel"
    assert span(right) < 0.1 * right.shape[1], "against wall-clock it is a point, not a level"


def test_writing_a_report_again_removes_the_figures_the_new_page_does_not_show(smoke_report, cli, tmp_path):
    run, _ = smoke_report
    output = tmp_path / "report"
    (output / "figures").mkdir(parents=True)
    stale = output / "figures" / "gallery_cs-tiny_seed0_test.png"  # e.g. a figure since split into parts
    stale.write_bytes(b"\x89PNG")
    mine = output / "figures" / "my-own-plot.png"  # not named as a report's figure: left alone
    mine.write_bytes(b"\x89PNG")
    code, _, err = cli("report", str(run), "-o", str(output))
    assert code == 0, err
    shown = set(re.findall(r'src="figures/([^"]+)"', (output / "index.html").read_text()))
    assert shown and shown | {mine.name} == {p.name for p in (output / "figures").iterdir()}


def test_past_twelve_variants_the_curve_figures_draw_each_solvers_deepest(tmp_path, monkeypatch):
    """The published energy-denoising run has 18 variants (GD/NAG x 3 model sizes x k = 1, 4, 12): the
    convergence, per-level and training figures draw the six k = 12 ones and say so; the sweep figure all."""
    from l2obench import figures, report

    drawn = {}

    def spy(name, labels_of):
        original = getattr(figures, name)

        def wrapper(*args, **kwargs):
            drawn.setdefault(name, []).append(labels_of(args))
            return original(*args, **kwargs)
        monkeypatch.setattr(figures, name, wrapper)

    spy("convergence", lambda args: set(args[0]))
    spy("training_curves", lambda args: set(args[0]))
    spy("against_values", lambda args: (args[2], set(args[0])))
    df = read_results([Path(__file__).resolve().parents[1] / "results" / "energy-denoising-small"])
    page = report.write_report(df, tmp_path / "report").read_text()
    deepest = {f"{a}^k energy ({size}) [k=12]" for a in ("GD", "NAG") for size in ("under", "about right", "over")}
    assert drawn["convergence"] == [deepest] and drawn["training_curves"] == [deepest]
    levels = [labels for xlabel, labels in drawn["against_values"] if xlabel.startswith("level")]
    swept = [labels for xlabel, labels in drawn["against_values"] if xlabel == "k"]
    assert levels == [deepest] and len(swept) == 1 and len(swept[0]) == 6  # one line per solver over k
    assert html.unescape(page).count("Of the 18 solver variants, each solver's deepest") == 3
