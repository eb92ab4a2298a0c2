"""A static HTML report of result rows: leaderboards and figures that open offline.

``write_report`` writes ``index.html`` (inline styles, no script, nothing remote)
and PNG figures under ``figures/``, one section per problem: its leaderboard
(mean ± standard deviation over seeds, seeds and test instances per row), the
primary metric against iteration and measured wall-clock, stop-time
distributions, the metric against a swept value, per-level results, training
curves of learned solvers (validation score against step), tuning curves of
classical solvers (validation loss against each grid value) and the visual
comparison of the runs' illustrations (``l2obench.gallery``, e.g. denoised
images); then the break-even cost of each learned solver (``l2obench.breakeven``).
"""
from __future__ import annotations

import datetime as dt
import html
import json
import math
import re
import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd

from l2obench import breakeven, figures, leaderboard
from l2obench.compare import primary_metric, primary_metrics
from l2obench.gallery import folder_name, galleries
from l2obench.pooling import SHARED_MARK, PoolingWarning, one_copy_per_cell, split_shared_labels
from l2obench.results import expand_sweep

WALL_CLOCK_NOTE = ("Wall-clock on a trajectory is measured: the test batch solved again with the solver stopped "
                   "after t iterations (layers), for a few log-spaced t, each the median of 3 to 5 timings, and "
                   "interpolated between them. Where a solver cannot be stopped at an iteration "
                   "(wall_clock_source 'modelled', and every trajectory of results before schema version 4) it is "
                   "modelled: the batched solve time times t / T.")
TRAINING_CAPTION = ("training curves of the learned solvers: the validation score early stopping minimises (the "
                    "family's loss, or a stage's own criterion) against the training step counted over the whole "
                    "schedule (stages one after the other), one line per seed.")
TUNING_CAPTION = ("tuning curves of the classical solvers: the validation loss (the family's loss, mean per validation "
                  "instance) against each tuned hyper-parameter's grid values, the least over the other "
                  "hyper-parameters' values, mean over seeds.")

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.82em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f2f2f2}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
.note{color:#555;font-size:.88em}.scroll{overflow-x:auto}
nav a{margin-right:1em}
"""


REPORT_FIGURE = re.compile(r"(p-.+-\d+|gallery_.+)\.png")  # the names ``_Section._figure`` and ``galleries`` give


def write_report(df: pd.DataFrame, output: str | Path, split: str = "test", sources: Sequence[str] = ()) -> Path:
    """Write the report of result rows ``df`` into directory ``output``.

    Parameters
    ----------
    df : DataFrame
        Result rows (``l2obench.results.read_results``), of one run or several
        (pooled as by the leaderboard: ``l2obench.pooling``).
    output : path
        Directory created if needed; ``index.html`` and ``figures/*.png`` are written, and the
        figures of an earlier report there that the page does not show are removed (PNGs named as
        a report names them, ``p-<problem>-<kind>-<n>.png`` and ``gallery_*.png``; other files stay).
    split : str
        Split whose metrics the leaderboard shows.
    sources : sequence of str
        The run directories read, named in the report.

    Returns
    -------
    Path
        The ``index.html`` written.
    """
    output = Path(output)
    (output / "figures").mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(record=True) as caught:  # pooling's warnings, shown on the page too
        warnings.simplefilter("always", PoolingWarning)
        df = one_copy_per_cell(df)
        df = df.assign(solver_base=df["solver"], problem_base=df["problem"])
        rows = split_shared_labels(leaderboard.with_sweep_labels(df))
        board = leaderboard.table(rows.assign(sweep=None), split=split)  # labels already carry the swept values
        known = primary_metrics(set(rows["family"]))
        break_even = _break_even(rows.assign(sweep=None), known)
    pooling = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, PoolingWarning)))
    for message in pooling:  # still the caller's to show, once each
        warnings.warn(message, PoolingWarning, stacklevel=2)
    for warning in caught:
        if not issubclass(warning.category, PoolingWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    sections = list(dict.fromkeys(rows.sort_values("timestamp", kind="stable")["problem_base"]))
    pictures = galleries(sources, output / "figures")
    body = ["<h1>l2obench report</h1>", _provenance(rows, sources),
            "<nav>" + "".join(f'<a href="#{_anchor(s)}">{html.escape(s)}</a>' for s in sections) + "</nav>",
            _pooling_notes(pooling), _not_ok(rows)]
    for section in sections:
        part = rows[rows["problem_base"] == section]
        body.append(_Section(section, part, board, known, output, pictures.get(folder_name(section), [])).render())
    body.append(break_even)
    body.append(f'<p class="note">{html.escape(WALL_CLOCK_NOTE)}</p>')
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>l2obench report</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(b for b in body if b) + "\n</body></html>\n")
    index = output / "index.html"
    index.write_text(page, encoding="utf-8")
    shown = set(re.findall(r'src="figures/([^"/]+\.png)"', page))
    for stale in (output / "figures").glob("*.png"):
        if REPORT_FIGURE.fullmatch(stale.name) and html.escape(stale.name) not in shown:
            stale.unlink()
    return index


def _break_even(rows: pd.DataFrame, known: dict) -> str:
    """The break-even table (``l2obench.breakeven``) of every learned solver; empty when none ran."""
    board = breakeven.table(rows, known)
    if board.empty:
        return ""
    headers, lines = breakeven.displayed(board)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in line) + "</tr>" for line in lines)
    note = ("Break-even N: the number of instances from which the learned solver's fit time plus N solves cost no "
            "more than those of every classical solver at least as good on the metric (their tuning time "
            "included): max over them of ceil((F_L - F_C) / (s_C - s_L)), 0 when the learned solver is cheaper to "
            "fit and to solve; never: it solves slower; —: no classical solver is as good.")
    return (f'<h2 id="break-even">Break-even cost</h2><div class="scroll"><table><tr>{head}</tr>{body}</table></div>'
            f'<p class="note">{html.escape(note)}</p>')


def _anchor(text: str) -> str:
    return "p-" + re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")


def _provenance(rows: pd.DataFrame, sources: Sequence[str]) -> str:
    """Where and when the rows were computed: runs, suites, devices, versions, commits, dates."""
    def values(column: str) -> str:
        return ", ".join(str(v) for v in dict.fromkeys(rows[column].dropna())) or "-"

    stamps = rows["timestamp"].dropna()
    items = [("runs", values("run_id")), ("suite, scale", ", ".join(dict.fromkeys(rows["suite"] + " / " + rows["scale"]))),
             ("device", values("device")), ("git commit", values("git_commit")),
             ("l2obench", values("l2obench_version")), ("torch", values("torch_version")),
             ("python", values("python_version")),
             ("computed", f"{stamps.min():%Y-%m-%d %H:%M} to {stamps.max():%Y-%m-%d %H:%M} UTC" if len(stamps) else "-"),
             ("report written", f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")]
    if sources:
        items.insert(0, ("results read", ", ".join(map(str, sources))))
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in items)
    return f"<table>{cells}</table>"


def _pooling_notes(messages: Sequence[str]) -> str:
    """What pooling the runs corrected or found (``l2obench.pooling``'s warnings), on the page too."""
    if not messages:
        return ""
    items = "".join(f"<li>{html.escape(m)}</li>" for m in messages)
    return f'<h2>Pooling the runs</h2><ul class="note">{items}</ul>'


def _not_ok(rows: pd.DataFrame) -> str:
    bad = rows[rows["status"] != "ok"].drop_duplicates("cell_id")
    if bad.empty:
        return ""
    body = "".join(f"<tr><td>{html.escape(r.problem)}</td><td>{html.escape(r.solver)}</td><td>{r.seed}</td>"
                   f"<td>{html.escape(r.status)}</td><td>{html.escape(str(r.message or ''))}</td></tr>"
                   for r in bad.itertuples())
    return ("<h2>Cells not ok</h2><div class=\"scroll\"><table><tr><th>problem</th><th>solver</th><th>seed</th>"
            f"<th>status</th><th>message</th></tr>{body}</table></div>")


class _Section:
    """One problem's part of the report (its label before sweeps; several blocks when swept or shared)."""

    def __init__(self, name: str, rows: pd.DataFrame, board: pd.DataFrame, known: dict, output: Path,
                 pictures: Sequence[tuple[Path, str]] = ()):
        self.name, self.rows, self.board, self.output, self.pictures = name, rows, board, output, pictures
        final = rows[rows["iteration"].isna()]
        self.metric = primary_metric(rows["family"].iloc[0], final["metric"], known)
        self.learned = dict(zip(rows["solver"], rows["learned"].astype(bool)))
        self.learned.update(zip(rows["solver_base"], rows["learned"].astype(bool)))
        self.problems = list(dict.fromkeys(rows["problem"]))
        self.colors = figures.palette(board.index.intersection(list(rows["solver"].unique()), sort=False))
        self.figures = 0

    def render(self) -> str:
        parts = [f'<h2 id="{_anchor(self.name)}">{html.escape(self.name)}</h2>',
                 f'<p class="note">family {html.escape(self.rows["family"].iloc[0])}; primary metric '
                 f'{html.escape(str(self.metric))}</p>']
        for problem in self.problems:
            parts.append(self._leaderboard(problem))
        if self.metric is not None:
            parts += [self._convergence(problem) for problem in self.problems]
            parts.append(self._sweeps())
            parts += [self._levels(problem) for problem in self.problems]
        parts += [self._stops(problem) for problem in self.problems]
        parts += [self._training(problem) for problem in self.problems]
        parts += [self._tuning(problem) for problem in self.problems]
        if self.pictures:
            parts.append("<h3>Visual comparison</h3>")
            parts += [self._img(path, caption, caption) for path, caption in self.pictures]
        return "\n".join(p for p in parts if p)

    def _figure(self, kind: str) -> Path:
        self.figures += 1
        return self.output / "figures" / f"{_anchor(self.name)}-{kind}-{self.figures}.png"

    def _img(self, path: Path, alt: str, caption: str) -> str:
        rel = path.relative_to(self.output).as_posix()
        return (f'<figure><img src="{html.escape(rel)}" alt="{html.escape(alt)}">'
                f'<figcaption class="note">{html.escape(caption)}</figcaption></figure>')

    # -- leaderboard -------------------------------------------------------------------
    def _leaderboard(self, problem: str) -> str:
        if problem not in self.board.columns.get_level_values(0):
            return ""
        sub = self.board[problem]
        ran = [s for s in sub.index if isinstance(sub.loc[s].iloc[0], dict)]
        rows = self.rows[self.rows["problem"] == problem]
        seeds = rows.groupby("solver")["seed"].nunique()
        instances = _test_instances(rows)
        head = "".join(f"<th>{html.escape(h)}</th>" for h in ["solver", "seeds", "test instances", *sub.columns])
        body = []
        marked = False
        for solver in ran:
            conv = sub.loc[solver, leaderboard.CONVERGED[2]] if leaderboard.CONVERGED[2] in sub.columns else None
            flag = leaderboard.not_converged(conv)
            marked |= flag
            name = html.escape(solver) + (f" {leaderboard.NOT_CONVERGED_MARK}" if flag else "")
            cells = "".join(f"<td>{leaderboard.format_entry(sub.loc[solver, h], 'html')}</td>" for h in sub.columns)
            body.append(f"<tr><td>{name}</td><td>{seeds.get(solver, 0)}</td><td>{instances.get(solver, '-')}</td>"
                        f"{cells}</tr>")
        notes = ["Mean ± standard deviation over seeds; bold: best per column."]
        if marked:
            notes.append(f"{leaderboard.NOT_CONVERGED_MARK} some test instances did not meet the solver's stopping "
                         "tolerance (conv: the fraction that did).")
        if SHARED_MARK in problem:
            notes.append(f"{SHARED_MARK} this label names different settings in the runs read; shown apart.")
        title = f"<h3>{html.escape(problem)}</h3>" if len(self.problems) > 1 or problem != self.name else ""
        return (f'{title}<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'
                f'<p class="note">{html.escape(" ".join(notes))}</p>')

    # -- figures -----------------------------------------------------------------------
    @staticmethod
    def _curves(rows: pd.DataFrame, x: str) -> dict[str, tuple]:
        """Solver -> ``(x, value)`` means over seeds; seeds that kept other iterations (log-spaced
        past ``TRAJECTORY_POINTS``) are interpolated, and held at their last point past their end."""
        out = {}
        for solver, g in rows.dropna(subset=[x, "value"]).groupby("solver", sort=False):
            wide = g.pivot_table(index="iteration", columns="seed", values=[x, "value"], aggfunc="mean")
            wide = wide.interpolate(method="index", limit_area="inside").ffill()
            out[solver] = (wide[x].mean(axis=1).tolist(), wide["value"].mean(axis=1).tolist())
        return out

    def _trajectory(self, problem: str) -> pd.DataFrame:
        """The test trajectory rows of ``problem``'s primary metric over all instances."""
        return self.rows[(self.rows["problem"] == problem) & self.rows["iteration"].notna()
                         & (self.rows["metric"] == self.metric) & (self.rows["split"] == "test")
                         & (self.rows["subset"] == "all")]

    def _convergence(self, problem: str) -> str:
        rows = self._trajectory(problem)
        if rows.empty:
            return ""
        rows, note = self._few_lines(problem, rows)
        curves = self._curves(rows.assign(it=rows["iteration"]), "it")
        wall = self._curves(rows, "wall_clock_s")
        timed = rows[rows["wall_clock_s"].notna()]
        modelled = sorted(set(timed.loc[timed["wall_clock_source"].isna()
                                        | timed["wall_clock_source"].eq("modelled"), "solver"]))
        label = ("wall-clock (s), measured" if not modelled else "wall-clock (s), modelled: solve time × t/T"
                 if len(modelled) == timed["solver"].nunique() else "wall-clock (s), measured (some modelled)")
        path = figures.convergence(curves, self.learned, self.metric, self._figure("convergence"), wall or None,
                                   label, self.colors)
        caption = (f"{problem}: test {self.metric} (all subsets) against iteration/layer"
                   + (" and wall-clock" if wall else "") + ", mean over seeds; solid: classical, dashed: learned.")
        if wall and modelled:
            caption += f" Wall-clock modelled (solve time × t/T) for: {', '.join(modelled)}."
        if any(len(x) == 1 for x, _ in curves.values()):
            caption += " Dotted: the one output of a solver without iterations (e.g. DnCNN), as a level."
        caption += note
        return self._img(path, f"{self.metric} against iteration, {problem}", caption)

    def _few_lines(self, problem: str, rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
        """``rows`` of the labels the convergence figure draws (each solver's deepest variant when more
        than ``MAX_LINES`` labels ran), and a caption's note saying so (empty when all are drawn)."""
        if rows["solver"].nunique() <= MAX_LINES:
            return rows, ""
        trajectory = self._trajectory(problem)
        if trajectory.empty:
            return rows, ""
        return (rows[rows["solver"].isin(_deepest_labels(trajectory))],
                f" Of the {rows['solver'].nunique()} solver variants, each solver's deepest (the sweep figures "
                "show them all).")

    def _training(self, problem: str) -> str:
        rows = self.rows[(self.rows["problem"] == problem) & (self.rows["metric"] == "training_val_score")
                         & self.rows["iteration"].notna() & self.rows["value"].notna()]
        if rows.empty:
            return ""
        rows, note = self._few_lines(problem, rows)
        curves = {solver: [(g["iteration"].tolist(), g["value"].tolist())
                           for _, g in by_solver.sort_values("iteration", kind="stable").groupby("seed")]
                  for solver, by_solver in rows.groupby("solver", sort=False)}
        path = figures.training_curves(curves, self._figure("training"), self.colors)
        return self._img(path, f"training curves, {problem}", f"{problem}: {TRAINING_CAPTION}{note}")

    def _tuning(self, problem: str) -> str:
        rows = self.rows[(self.rows["problem"] == problem) & (self.rows["metric"] == "tuning_val_loss")
                         & self.rows["value"].notna()]
        if rows.empty:
            return ""
        panels: dict[str, dict[str, tuple]] = {}
        for solver, by_solver in rows.groupby("solver", sort=False):
            profiles = []  # per seed: (hyper-parameter, grid value) -> least loss over the other hyper-parameters
            for _, cell in by_solver.groupby("cell_id", sort=False):
                points = [json.loads(p) for p in cell["solver_params"]]
                tuned = [k for k in points[0] if len({json.dumps(p.get(k), sort_keys=True) for p in points}) > 1]
                profile: dict = {}
                for point, loss in zip(points, cell["value"]):
                    for name in tuned:
                        key = (name, _hashable(point[name]))
                        profile[key] = min(profile.get(key, math.inf), loss)
                profiles.append(profile)
            table = pd.DataFrame([(name, value, loss) for profile in profiles for (name, value), loss in profile.items()],
                                 columns=["name", "value", "loss"])
            for name, g in table.groupby("name", sort=False):
                mean = g.groupby("value", sort=False)["loss"].mean()
                order = sorted(mean.index, key=_grid_key)
                panels.setdefault(name, {})[solver] = (order, mean.loc[order].tolist())
        if not panels:
            return ""
        path = figures.tuning_curves(panels, self._figure("tuning"), self.colors)
        return self._img(path, f"tuning curves, {problem}", f"{problem}: {TUNING_CAPTION}")

    def _stops(self, problem: str) -> str:
        rows = self.rows[(self.rows["problem"] == problem) & self.rows["iteration"].notna()
                         & (self.rows["split"] == "test")]
        measured = _distribution(rows[rows["metric"] == "stop_fraction"])
        policy = _distribution(rows[rows["metric"] == "stop_probability"])
        if not measured and not policy:
            return ""
        path = figures.stop_times(measured, policy, self._figure("stops"), self.colors)
        return self._img(path, f"stop-time distributions, {problem}",
                         f"{problem}: when test instances stop, mean over seeds: the fraction stopping at each "
                         "iteration (summed over bins of iterations past 60) for solvers stopping per instance, "
                         "and learned stopping policies' q(t).")

    def _levels(self, problem: str) -> str:
        rows = self.rows[(self.rows["problem"] == problem) & self.rows["iteration"].isna()
                         & (self.rows["metric"] == self.metric) & (self.rows["split"] == "test")
                         & (self.rows["subset"] != "all") & self.rows["subset"].notna()]
        if rows["subset"].nunique() < 2:
            return ""
        rows, note = self._few_lines(problem, rows)
        lines = _mean_lines(rows, "solver", "subset", order=_level_order(rows["subset"]))
        path = figures.against_values(lines, self.learned, "level (test subset)", self.metric,
                                      self._figure("levels"), categorical=True, colors=self.colors)
        return self._img(path, f"{self.metric} per level, {problem}",
                         f"{problem}: test {self.metric} per level, mean ± standard deviation over seeds.{note}")

    def _sweeps(self) -> str:
        rows = self.rows[self.rows["iteration"].isna() & (self.rows["metric"] == self.metric)
                         & (self.rows["split"] == "test") & (self.rows["subset"] == "all")]
        if rows["sweep"].isna().all():
            return ""
        expanded = expand_sweep(rows)
        swept = [c for c in expanded.columns if c not in rows.columns]
        out = []
        for key in swept:
            values = expanded[key].dropna()
            if values.nunique() < 2 or not all(isinstance(v, (int, float)) for v in values):
                continue
            sel = expanded[expanded[key].notna()]
            others = [k for k in swept if k != key]
            line = sel["solver_base"] + sel["problem"].map(_shared_part)
            for k in others:
                line = line + sel[k].map(lambda v, k=k: "" if _missing(v) else f" [{k}={v}]")
            lines = _mean_lines(sel.assign(line=line), "line", key)
            learned = {label: self.learned.get(base, False) for label, base in zip(line, sel["solver_base"])}
            path = figures.against_values(lines, learned, key, self.metric, self._figure(f"sweep-{key}"))
            out.append(self._img(path, f"{self.metric} against {key}",
                                 f"{self.name}: test {self.metric} against the swept {key}, mean ± standard "
                                 "deviation over seeds."))
        return "\n".join(out)


def _hashable(value):
    """A grid value as a key: numbers, strings and booleans as they are, anything else as JSON."""
    return value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value, sort_keys=True)


def _grid_key(value):
    """Numbers in numeric order, then anything else in text order."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, float(value), "") if number else (1, 0.0, str(value))


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _shared_part(problem: str) -> str:
    return f" {SHARED_MARK} {problem.split(SHARED_MARK, 1)[1].strip()}" if SHARED_MARK in problem else ""


def _test_instances(rows: pd.DataFrame) -> dict[str, str]:
    """Test instances per solver: the batched solve time over the time per instance (seeds agree)."""
    timing = rows[rows["split"].eq("test") & rows["iteration"].isna()
                  & rows["metric"].isin(["solve_seconds", "solve_seconds_per_instance"])]
    wide = timing.pivot_table(index=["solver", "seed"], columns="metric", values="value", aggfunc="first")
    if not {"solve_seconds", "solve_seconds_per_instance"} <= set(wide.columns):
        return {}
    counts = (wide["solve_seconds"] / wide["solve_seconds_per_instance"]).round().dropna().astype(int)
    return {solver: "/".join(str(v) for v in sorted(set(g))) for solver, g in counts.groupby(level="solver")}


MAX_LINES = 12  # solver labels a convergence, level or training figure draws; past it, each solver's deepest variant


def _deepest_labels(trajectory: pd.DataFrame) -> set:
    """The labels of each base solver's variant running longest in ``trajectory``'s rows."""
    depth = trajectory.groupby(["solver_base", "solver"])["iteration"].max().reset_index()
    return set(depth.sort_values("iteration").drop_duplicates("solver_base", keep="last")["solver"])


def _distribution(rows: pd.DataFrame, bins: int = 60) -> dict[str, tuple]:
    """Solver -> ``(iterations, fraction)`` averaged over seeds, every iteration present (0 where
    nothing stops); past ``bins`` iterations, summed over bins of equal width (x: the bin's centre)."""
    if rows.empty:
        return {}
    seeds = rows.groupby("solver")["seed"].nunique()
    total = rows.groupby(["solver", "iteration"], sort=False)["value"].sum()
    last = int(total.index.get_level_values("iteration").max())
    width = max(1, math.ceil(last / bins))
    out = {}
    for solver, g in total.groupby(level="solver", sort=False):
        full = g.droplevel("solver").reindex(range(1, last + 1), fill_value=0.0) / seeds[solver]
        binned = full.groupby((full.index - 1) // width).sum()
        out[solver] = (((binned.index * width) + (width + 1) / 2).tolist(), binned.tolist())
    return out


def _mean_lines(rows: pd.DataFrame, line: str, x: str, order: list | None = None) -> dict[str, tuple]:
    stats = rows.groupby([line, x], sort=False)["value"].agg(["mean", "std"]).reset_index()
    out = {}
    for label, g in stats.groupby(line, sort=False):
        g = g.set_index(x).reindex([v for v in order if v in set(g[x])]).reset_index() if order else g.sort_values(x)
        out[label] = (g[x].tolist(), g["mean"].tolist(), g["std"].fillna(0).tolist())
    return out


def _level_order(subsets: pd.Series) -> list[str]:
    """Levels such as ``snr=20`` or ``M=80`` in numeric order where their values are numbers."""
    def key(level: str):
        name, _, value = level.partition("=")
        try:
            return (name, 0, float(json.loads(value)), "")
        except (ValueError, TypeError):
            return (name, 1, 0.0, value)

    return sorted(dict.fromkeys(subsets), key=key)
