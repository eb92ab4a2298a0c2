"""Matplotlib figures of a report, drawn with the Agg backend into PNG files.

Each function takes tidy data (already averaged over seeds) and the path of the
PNG it writes; none reads result rows itself (``l2obench.report`` does).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 96
LEARNED_STYLE = {"linestyle": "--"}
CLASSICAL_STYLE = {"linestyle": "-"}
POINT_STYLE = {"marker": "o", "markersize": 5}  # a curve of one point (DnCNN's one output), which a line alone hides


def palette(labels) -> dict:
    """A colour per label (tab10, or tab20 past ten labels), so a solver keeps its colour across figures."""
    labels = list(dict.fromkeys(labels))
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _finish(fig, ax_list, path: Path) -> Path:
    """One legend right of the figure, for the labels of all panels, then the PNG."""
    handles = {}
    for ax in ax_list:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                   frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _log_x(values) -> bool:
    values = [v for v in values if v > 0]
    return bool(values) and max(values) / min(values) >= 50


def _style(learned: bool | None, x) -> dict:
    """Dashed for learned, solid for classical solvers; a marker where the curve is one point."""
    return {**(LEARNED_STYLE if learned else CLASSICAL_STYLE), **(POINT_STYLE if len(x) == 1 else {})}


def convergence(curves: Mapping[str, tuple], learned: Mapping[str, bool], metric: str, path: Path,
                wall_clock: Mapping[str, tuple] | None = None, wall_clock_label: str = "wall-clock (s)",
                colors: Mapping | None = None) -> Path:
    """Metric against iteration (and, where given, against wall-clock) per solver.

    Parameters
    ----------
    curves : mapping
        Solver label -> ``(iterations, values)``. A curve of one point (a solver with one output,
        such as DnCNN) is drawn as a dotted level across the iteration panel, and as a point
        against wall-clock.
    learned : mapping
        Solver label -> whether it is learned (dashed) or classical (solid).
    metric : str
        The y-axis.
    path : Path
        PNG written.
    wall_clock : mapping, optional
        Solver label -> ``(seconds, values)``: a second panel.
    wall_clock_label : str
        The second panel's x-axis.
    colors : mapping, optional
        Solver label -> colour (default: ``palette`` of the labels).
    """
    panels = 2 if wall_clock else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.6), squeeze=False)
    axes = list(axes[0])
    colors = colors or palette(curves)
    for label, (x, y) in curves.items():
        if len(x) == 1:  # one output (DnCNN): a level to compare with, not a point at some iteration
            axes[0].axhline(y[0], color=colors[label], label=label, linewidth=1.2, linestyle=":")
            continue
        axes[0].plot(x, y, color=colors[label], label=label, linewidth=1.4, **_style(learned.get(label), x))
    axes[0].set_xlabel("iteration / layer")
    if _log_x([v for x, _ in curves.values() for v in x]):
        axes[0].set_xscale("log")
    if wall_clock:
        for label, (x, y) in wall_clock.items():
            axes[1].plot(x, y, color=colors.get(label), linewidth=1.4, **_style(learned.get(label), x))
        axes[1].set_xlabel(wall_clock_label)
        if _log_x([v for x, _ in wall_clock.values() for v in x]):
            axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    return _finish(fig, axes, path)


def stop_times(measured: Mapping[str, tuple], policy: Mapping[str, tuple], path: Path,
               colors: Mapping | None = None) -> Path:
    """Stop-time distributions: the fraction of test instances stopping at each iteration
    (``measured``) and a learned policy's ``q(t)`` (``policy``), each label -> ``(iterations, values)``."""
    panels = [(title, data) for title, data in (("instances stopping at t (stop_fraction)", measured),
                                                 ("policy's stop distribution q(t) (stop_probability)", policy))
              if data]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.4), squeeze=False)
    axes = list(axes[0])
    colors = colors or palette([*measured, *policy])
    for ax, (title, data) in zip(axes, panels):
        for label, (x, y) in data.items():
            ax.step(x, y, where="mid", color=colors[label], label=label, linewidth=1.4)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration / layer")
        ax.set_ylabel("fraction")
        ax.grid(alpha=0.3)
    return _finish(fig, axes, path)


def against_values(lines: Mapping[str, tuple], learned: Mapping[str, bool], xlabel: str, metric: str,
                   path: Path, categorical: bool = False, colors: Mapping | None = None) -> Path:
    """One line per label of ``metric`` against a swept value or a level, each ``(x, mean, spread)``;
    ``categorical`` x values (levels such as ``snr=20``) are placed in their given order."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    colors = colors or palette(lines)
    order: list = []
    if categorical:
        order = list(dict.fromkeys(v for x, _, _ in lines.values() for v in x))
    for label, (x, y, spread) in lines.items():
        xs = [order.index(v) for v in x] if categorical else list(x)
        style = LEARNED_STYLE if learned.get(label) else CLASSICAL_STYLE
        ax.errorbar(xs, y, yerr=spread, color=colors[label], label=label, marker="o", markersize=3.5,
                    capsize=2, linewidth=1.2, **style)
    if categorical:
        ax.set_xticks(range(len(order)), order)
    elif _log_x([v for x, _, _ in lines.values() for v in x]):
        ax.set_xscale("log", base=2)
    values = [v for _, y, _ in lines.values() for v in y if v == v]
    if values and min(values) > 0 and max(values) / min(values) >= 100:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    return _finish(fig, [ax], path)



def training_curves(curves: Mapping[str, list], path: Path, colors: Mapping | None = None) -> Path:
    """Validation score against training step, one line per seed, a colour per solver.

    Parameters
    ----------
    curves : mapping
        Solver label -> list of ``(steps, values)``, one per seed.
    path : Path
        PNG written.
    colors : mapping, optional
        Solver label -> colour (default: ``palette`` of the labels).
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    colors = colors or palette(curves)
    values = []
    for label, seeds in curves.items():
        for i, (x, y) in enumerate(seeds):
            ax.plot(x, y, color=colors[label], label=label if i == 0 else None, linewidth=1.2,
                    alpha=1.0 if len(seeds) == 1 else 0.75)
            values += [v for v in y if v == v]
    if values and min(values) > 0 and max(values) / min(values) >= 100:
        ax.set_yscale("log")
    ax.set_xlabel("training step (over the whole schedule)")
    ax.set_ylabel("validation score (lower is better)")
    ax.grid(alpha=0.3)
    return _finish(fig, [ax], path)


def tuning_curves(panels: Mapping[str, Mapping[str, tuple]], path: Path, colors: Mapping | None = None) -> Path:
    """Validation loss against each tuned hyper-parameter's grid values, one panel per hyper-parameter.

    Parameters
    ----------
    panels : mapping
        Hyper-parameter -> {solver label -> ``(grid values, losses)``}; values
        that are not all numbers are placed in their given order.
    path : Path
        PNG written.
    colors : mapping, optional
        Solver label -> colour (default: ``palette`` of the labels).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    axes = list(axes[0])
    colors = colors or palette([label for lines in panels.values() for label in lines])
    for ax, (name, lines) in zip(axes, panels.items()):
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for x, _ in lines.values() for v in x)
        order = [] if numeric else list(dict.fromkeys(str(v) for x, _ in lines.values() for v in x))
        values = []
        for label, (x, y) in lines.items():
            xs = list(x) if numeric else [order.index(str(v)) for v in x]
            ax.plot(xs, y, color=colors[label], label=label, marker="o", markersize=3.5, linewidth=1.2)
            values += [v for v in y if v == v]
        if not numeric:
            ax.set_xticks(range(len(order)), order)
        elif _log_x([v for x, _ in lines.values() for v in x]):
            ax.set_xscale("log")
        if values and min(values) > 0 and max(values) / min(values) >= 100:
            ax.set_yscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("validation loss (mean per instance)")
        ax.grid(alpha=0.3)
    return _finish(fig, axes, path)
