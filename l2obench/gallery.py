"""Visual comparisons: the illustrations a run wrote (``ProblemFamily.illustrations``) side by side.

The runner writes, per problem setting and seed, each solver's images under
``images/<problem>/seed<k>/<solver>/<split>/`` and the inputs once under
``images/<problem>/seed<k>/input/<split>/`` (for denoising: ``<name>_clean.png``
and ``<name>_noisy.png``, each solver's output ``<name>.png``). ``gallery``
composes one figure per setting, seed and split: a row per image (e.g. per
noise level), the clean and noisy images, then every solver's output, each
panel titled with its PSNR against the clean image as stored (8-bit PNG). Past
``MAX_SOLVER_COLUMNS`` solvers (a sweep's models, say) the solvers are split
over several figures, in their labels' natural order (``k=4`` before ``k=12``),
so that each panel stays legible.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

__all__ = ["folder_name", "gallery", "galleries", "solver_folders"]

INPUTS = ("clean", "noisy")
MAX_SOLVER_COLUMNS = 6


def folder_name(label: str) -> str:
    """A problem's or solver's label as the one path component its images are written under."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", label).strip("_") or "_"


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float64) / 255


def _psnr(image: np.ndarray, clean: np.ndarray) -> float:
    error = float(np.mean((image - clean) ** 2))
    return math.inf if error == 0 else 10 * math.log10(1 / error)


def _natural(name: str) -> list:
    """Sort key: the name's runs of digits compared as numbers (``k=4`` before ``k=12``)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def solver_folders(seed_dir: Path, split: str) -> list[str]:
    """The solvers (folder names) with images of ``split`` under ``seed_dir``, in natural order."""
    return sorted((p.name for p in seed_dir.iterdir() if p.is_dir() and p.name != "input" and (p / split).is_dir()),
                  key=_natural)


def gallery(seed_dir: Path, split: str, path: Path, solvers: list[str] | None = None) -> Path | None:
    """One figure of ``seed_dir``'s (``images/<problem>/seed<k>``) images of ``split`` at ``path``.

    ``solvers`` (folder names) are the columns after the inputs (default: every solver there).
    Returns ``path``, or None when ``seed_dir`` holds no inputs for ``split``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inputs = seed_dir / "input" / split
    names = sorted((p.name[:-len("_clean.png")] for p in inputs.glob("*_clean.png")), key=_level) \
        if inputs.is_dir() else []
    solvers = solver_folders(seed_dir, split) if solvers is None else list(solvers)
    if not names:
        return None
    columns = [*INPUTS, *solvers]
    fig, axes = plt.subplots(len(names), len(columns), squeeze=False,
                             figsize=(1.6 * len(columns), 1.75 * len(names) + 0.3))
    for row, name in enumerate(names):
        clean = _read(inputs / f"{name}_clean.png")
        for col, column in enumerate(columns):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            file = inputs / f"{name}_{column}.png" if column in INPUTS else seed_dir / column / split / f"{name}.png"
            if not file.exists():
                ax.set_axis_off()
                continue
            image = _read(file)
            ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            label = column.replace("_", " ") if row == 0 else ""
            title = "" if column == "clean" else f"{_psnr(image, clean):.2f} dB"
            ax.set_title(f"{label}\n{title}" if label else title, fontsize=7)
            if col == 0:
                ax.set_ylabel(name.split("_")[0].replace("sigma", "σ = "), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _level(name: str) -> tuple[float, str]:
    """Sort key: the number in the name's first part (``sigma25_3`` -> 25), then the name."""
    head = name.split("_")[0]
    digits = "".join(c for c in head if c.isdigit() or c == ".")
    try:
        return float(digits), name
    except ValueError:
        return math.inf, name


def galleries(run_dirs, output: Path) -> dict[str, list[tuple[Path, str]]]:
    """Figures of every setting, seed and split in the runs' ``images/`` folders, written under ``output``.

    Returns ``{problem folder: [(figure path, caption), ...]}`` (folder: the problem's label as a path
    component).
    """
    found: dict[str, list[tuple[Path, str]]] = {}
    for run in run_dirs:
        images = Path(run) / "images"
        if not images.is_dir():
            continue
        for problem in sorted(p for p in images.iterdir() if p.is_dir()):
            for seed_dir in sorted(p for p in problem.iterdir() if p.is_dir()):
                splits = sorted(p.name for p in (seed_dir / "input").iterdir()) if (seed_dir / "input").is_dir() else []
                for split in splits:
                    solvers = solver_folders(seed_dir, split)
                    parts = [solvers[i:i + MAX_SOLVER_COLUMNS] for i in range(0, len(solvers), MAX_SOLVER_COLUMNS)]
                    for number, part in enumerate(parts or [[]], 1):
                        suffix = f"_part{number}" if len(parts) > 1 else ""
                        path = output / f"gallery_{problem.name}_{seed_dir.name}_{split}{suffix}.png"
                        if gallery(seed_dir, split, path, part) is None:
                            break
                        caption = (f"{problem.name}, {seed_dir.name}, {split} split: clean, noisy and each solver's "
                                   "output of the first image of every noise level; PSNR of the stored 8-bit image")
                        if len(parts) > 1:
                            caption += f" (solvers, part {number} of {len(parts)})"
                        found.setdefault(problem.name, []).append((path, caption))
    return found
