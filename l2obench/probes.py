"""Algorithm-property probes: empirical convergence, stability and sensitivity over k (thesis 4.4.1).

For a solver with an iteration-count parameter ``k`` (``k``, ``max_iter``,
``n_layers`` or ``n_steps``) and a problem family that can perturb its
instances, every ``k`` is a cell of its own (a learned solver is trained for
each ``k``, as in thesis 4.7; a classical one tuned, unless its parameters are
fixed), fitted through the runner (so fitted states are cached), and on
``instances`` test instances:

* ``cvg``: ``||Alg^k - opt|| / ||Alg^0 - opt||`` (eq. 4.6) with ``opt`` the
  family's exact minimizer of the observed objective
  (``ProblemFamily.minimizer``) and ``Alg^0 = 0`` (every algorithm here starts
  at zero); NaN where the family gives no minimizer;
* ``stab``: ``||Alg^k(d') - Alg^k(d)|| / size`` (eq. 4.7) for perturbations
  ``d'`` of the problem data of size ``eps`` per perturbed tensor
  (``ProblemFamily.perturb``: for quadratic energies ``||Q - Q'||_2 + ||b -
  b'||_2``), ``directions`` random ones per instance;
* ``sens``: ``||Alg^k_phi' - Alg^k_phi|| / ||phi' - phi||`` (eq. 4.8) for
  random perturbations of norm ``eps`` of the solver's parameters: a learned
  solver's network weights, a classical solver's tuned numbers (those with a
  validation grid, e.g. the step).

Each property is reported as its worst case over instances and directions (the
definitions' supremum, estimated) and as its mean, under the metric names
``cvg``/``cvg_mean``, ``stab``/``stab_mean``, ``sens``/``sens_mean``, in rows of
the results schema whose ``sweep`` column holds ``k``: a curve over ``k`` is one
query (``l2obench.results.expand_sweep``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from l2obench.contracts import Budget, Instances, ProblemFamily, Solver
from l2obench.errors import UsageError
from l2obench.hashing import generator_for
from l2obench.learned import LearnedSolver
from l2obench.results import write_parquet
from l2obench.suites import Cell

__all__ = ["K_PARAMS", "PROBE_METRICS", "ProbeSpec", "k_param", "probe_rows", "probe_table", "run_probe"]

# Names of the iteration-count parameter, in the order they are looked for.
K_PARAMS = ("k", "max_iter", "n_layers", "n_steps")
PROBE_METRICS = ("cvg", "cvg_mean", "stab", "stab_mean", "sens", "sens_mean")


def k_param(spec) -> str:
    """The solver spec's iteration-count parameter (``K_PARAMS``).

    Raises
    ------
    UsageError
        If the solver has none (it is not an iterative solver the probe can step).
    """
    for name in K_PARAMS:
        if name in spec.params:
            return name
    raise UsageError(f"solver {spec.name!r} has no iteration-count parameter ({', '.join(K_PARAMS)}) to probe")


def _norms(delta: torch.Tensor) -> torch.Tensor:
    """Per-instance l2 norm of a batch of outputs (all axes but the first)."""
    return torch.linalg.vector_norm(delta.double().flatten(1), dim=1)


def _parameters(solver: Solver, spec) -> tuple[list[torch.Tensor], Any]:
    """What ``sens`` perturbs, as tensors, and a function writing perturbed values back.

    A learned solver: its network's parameters. A classical solver: its
    float hyper-parameters that have a validation grid.
    """
    if isinstance(solver, LearnedSolver):
        tensors = [p.detach() for p in solver.network_.parameters()]

        def write(values):
            with torch.no_grad():
                for p, v in zip(solver.network_.parameters(), values):
                    p.copy_(v)
        return tensors, write
    names = [name for name, param in spec.params.items()
             if param.grid is not None and isinstance(getattr(solver, name), float)]
    if not names:
        raise UsageError(f"solver {spec.name!r} has no learned weights nor tuned float hyper-parameters to perturb")

    def write(values):
        solver.set_params(**{name: float(v) for name, v in zip(names, values)})
    return [torch.tensor(float(getattr(solver, name)), dtype=torch.float64) for name in names], write


def probe_rows(solver: Solver, spec, family, test: Instances, eps: float, directions: int,
               generator: torch.Generator) -> dict[str, float]:
    """``cvg``, ``stab`` and ``sens`` of a fitted ``solver`` on ``test`` (module docstring), worst case and mean."""
    observation = test.observation()
    with torch.no_grad():
        base = solver.solve(observation).estimate
        opt = family.minimizer(observation)
        zeros = torch.zeros(len(test), dtype=torch.float64, device=base.device)
        if opt is None:
            cvg = zeros + math.nan
        else:
            cvg = _norms(base - opt) / _norms(opt).clamp_min(torch.finfo(torch.float64).tiny)
        stab, sens = zeros, zeros
        values, write = _parameters(solver, spec)
        for _ in range(directions):
            perturbed, size = family.perturb(observation, eps, generator)
            stab = torch.maximum(stab, _norms(solver.solve(perturbed).estimate - base) / size.to(zeros))
            steps = [torch.randn(v.shape, generator=generator, dtype=torch.float64) for v in values]
            scale = eps / math.sqrt(sum(float((s**2).sum()) for s in steps))
            write([v + (s * scale).to(v) for v, s in zip(values, steps)])
            try:
                moved = solver.solve(observation).estimate
            finally:
                write(values)
            sens = torch.maximum(sens, _norms(moved - base) / eps)
    out = {}
    for name, per_instance in (("cvg", cvg), ("stab", stab), ("sens", sens)):
        out[name], out[f"{name}_mean"] = float(per_instance.max()), float(per_instance.mean())
    return out


@dataclass
class ProbeSpec:
    """What ``run_probe`` measures: a solver on a problem setting over ``ks``.

    Parameters
    ----------
    solver, family : str
        Registered names.
    settings, params : mapping
        Problem settings and solver parameters set by the caller (checked).
    ks : sequence of int
        Iteration counts; each is a cell (a separately fitted solver).
    seed : int
    instances : int
        Test instances probed (the first of the test split).
    directions : int
        Random perturbation directions per instance (data and parameters).
    eps : float
        Size of the perturbations.
    budget : Budget
        Training budget of a learned solver.
    """

    solver: str
    family: str
    settings: Mapping[str, Any]
    params: Mapping[str, Any]
    ks: Sequence[int]
    seed: int = 0
    instances: int = 256
    directions: int = 8
    eps: float = 1e-3
    budget: Budget = Budget(steps=1000, batch_size=50, eval_every=50, patience=10)

    def cells(self, registry) -> list[Cell]:
        """One cell per ``k`` (suite ``probe``, scale ``probe``), with ``k`` as the solver's swept value."""
        pspec, sspec = registry.problem(self.family), registry.solver(self.solver)
        if not sspec.supports(self.family):
            raise UsageError(f"solver {self.solver!r} does not support problem family {self.family!r}; "
                             f"it supports: {', '.join(sspec.families)}")
        name = k_param(sspec)
        if name in self.params:
            raise UsageError(f"set {name} with --k, not as a solver parameter")
        settings = pspec.resolve(self.settings)
        try:
            pspec.build(**settings)
        except ValueError as exc:
            raise UsageError(f"problem settings: {exc}") from exc
        cells = []
        for k in self.ks:
            overrides = {**self.params, name: int(k)}
            cells.append(Cell("probe", "probe", self.family, self.family, settings, sspec.name, sspec.name,
                              sspec.resolve(overrides, family=self.family), tuple(sorted(overrides)),
                              sspec.learned, self.seed, self.budget, {"solver": {name: int(k)}}))
        return cells


def run_probe(registry, probe: ProbeSpec, runner) -> list[dict]:
    """Fit the solver at every ``k`` (through ``runner``: cached), probe it, write one Parquet file per ``k``.

    Returns the rows written. Cells already on disk (``runner``'s resume) are
    read back instead of being computed again.
    """
    from l2obench.results import read_results

    rows: list[dict] = []
    for cell in runner.cells:
        path = runner.cell_path(cell)
        if path.exists():
            rows += read_results([path]).to_dict("records")
            continue
        data = runner.data_for(cell)
        family = data.family
        if type(family).perturb is ProblemFamily.perturb:
            raise UsageError(f"problem family {cell.family!r} does not say how to perturb its instances "
                             "(ProblemFamily.perturb): the stability probe cannot run on it")
        spec = registry.solver(cell.solver)
        solver = spec.build(cell.family, **cell.params)
        runner._fit(cell, data, solver)
        test = data.splits["test"].subset(slice(0, probe.instances)).to(runner.device)
        values = probe_rows(solver, spec, family, test, probe.eps, probe.directions,
                            generator_for("probe", cell.cell_id))
        params = solver.get_params()
        cell_rows = [runner._row(cell, metric=metric, value=value, split="test", subset="all", direction="lower",
                                 params=params, data_hash=data.hashes["test"])
                     for metric, value in values.items()]
        write_parquet(cell_rows, path)
        rows += cell_rows
    return rows


def probe_table(rows: Sequence[Mapping], k_name: str):
    """The probes as a table: one row per ``k``, one column per metric (pandas)."""
    import json

    import pandas as pd

    frame = pd.DataFrame([{"k": json.loads(r["sweep"])["solver"][k_name], "metric": r["metric"],
                           "value": r["value"]} for r in rows])
    return frame.pivot(index="k", columns="metric", values="value")[list(PROBE_METRICS)].sort_index()


def default_results(solver: str, family: str) -> Path:
    return Path("l2obench-results") / f"probe-{solver}-{family}"
