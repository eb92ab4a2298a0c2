"""The ``l2obench`` command line: ``list``, ``run``, ``suite show``, ``leaderboard``, ``compare``, ``report``
and ``probe``.

Heavy modules (torch, pandas) are imported inside the commands that need them,
so ``l2obench list`` starts quickly.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from l2obench import __version__
from l2obench.errors import L2OBenchError, UnknownNameError, UsageError

_plugin_option = click.option("--plugin", "plugins", multiple=True, type=click.Path(dir_okay=False),
                              help="Register the plugin module in this Python file (repeatable).")
_strict_option = click.option("--strict-plugins", is_flag=True,
                              help="Fail on the first broken plugin instead of skipping it.")


def _registry(plugins, strict):
    from l2obench.registry import Registry

    return Registry(plugin_files=plugins, strict=strict)


def _comma_list(value: str | None, option: str) -> list[str] | None:
    """The items of a comma-separated ``option`` (None when the option is not given); an empty one is refused."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",")]
    if not any(items):
        raise UsageError(f"{option} is empty; give at least one value, or leave the option out")
    if not all(items):
        raise UsageError(f"{option} has an empty item in {value!r}")
    return items


def _seeds(value: str | None) -> list[int] | None:
    if value is None:
        return None
    items = _comma_list(value, "--seeds")
    try:
        return [int(v) for v in items]
    except ValueError:
        raise UsageError(f"--seeds takes integers separated by commas, got {value!r}") from None


@contextlib.contextmanager
def _writing(path):
    """Report a failure to write ``path`` (a missing folder, a read-only file system, a file in
    the way) as one line, exit code 2."""
    try:
        yield
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename or path}: {exc.strerror or exc}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="l2obench")
def cli():
    """Benchmark learned and classical optimizers on generated problem distributions."""


@cli.command("list")
@_plugin_option
@_strict_option
def list_command(plugins, strict_plugins):
    """List problems, solvers, suites and plugins."""
    registry = _registry(plugins, strict_plugins)
    echo = click.echo
    echo("Problems")
    for name, reg in registry.problems.items():
        spec = reg.spec
        echo(f"  {name:<12} {spec.description}")
        echo(f"  {'':<12} from {reg.plugin.origin}")
        echo(f"  {'':<12} settings: " + ", ".join(f"{k}={p.default!r}" for k, p in spec.params.items()))
    echo("\nSolvers")
    for name, reg in registry.solvers.items():
        spec = reg.spec
        kind = "learned" if spec.learned else "classical"
        echo(f"  {name:<12} {kind:<9} families: {', '.join(spec.families)}  from {reg.plugin.origin}")
        echo(f"  {'':<12} {spec.description}")
        for key, p in spec.params.items():
            grid = f"  (tuned on validation over {list(p.grid)})" if p.grid is not None else ""
            echo(f"  {'':<14}{key} = {_default(p)}  [{p.describe(article=False)}]{grid}  {p.help}")
    echo("\nSuites")
    for name, reg in registry.suites.items():
        echo(f"  {name:<12} {reg.spec.description}  from {reg.plugin.origin}")
    echo("\nPlugins")
    for record in registry.plugins:
        state = "ok" if record.ok else f"BROKEN: {record.error}"
        echo(f"  {record.name:<18} {record.origin}  [{state}]")
        if record.provides:
            echo(f"  {'':<18} provides {', '.join(record.provides)}")


def _default(param) -> str:
    """A parameter's default as listed: per family where it has family defaults."""
    if not param.family_defaults:
        return repr(param.default)
    return ", ".join(f"{value!r} ({family})" for family, value in param.family_defaults.items())


def _suite_definition(registry, suite: str):
    """``(name, definition, path)`` of a registered suite (``path`` None) or a suite file."""
    from l2obench.suites import load_suite_file

    if suite in registry.suites:
        return suite, registry.suites[suite].spec.definition, None
    path = Path(suite)
    if path.suffix in (".toml", ".json") or path.exists():
        if not path.is_file():
            raise UsageError(f"suite file not found: {path}")
        return str(path), load_suite_file(path), path
    raise UnknownNameError("suite", suite, registry.suites)


def _cell_timeout(value: float | None, scale: str) -> float | None:
    from l2obench.timeout import DEFAULT_CELL_TIMEOUT

    return DEFAULT_CELL_TIMEOUT.get(scale) if value is None else value or None


def _check_execution(executor: str, jobs: int, scheduler: str | None, workers: int | None) -> None:
    """Refuse options that do not belong to the chosen executor."""
    if executor != "local" and jobs != 1:
        raise UsageError(f"-j is for --executor local; a Dask cluster's size is its workers (--executor {executor})")
    if scheduler is not None and executor != "dask":
        raise UsageError("--scheduler goes with --executor dask")
    if executor == "dask" and not scheduler:
        raise UsageError("--executor dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786)")
    if workers is not None and executor != "dask-local":
        raise UsageError("--workers goes with --executor dask-local (on this machine, use -j)")


def _worker_counts(executor: str, jobs: int, workers: int | None, threads: int | None):
    """``(workers, threads per worker)`` of a parallel run, by the thread policy (``l2obench.threads``)."""
    from l2obench import threads as thread_policy

    if executor == "local":
        return jobs, thread_policy.threads_per_worker(jobs, threads)
    if executor == "dask-local":
        workers = workers or thread_policy.available_cores()
        return workers, thread_policy.threads_per_worker(workers, threads)
    return None, threads or 1  # a Dask worker thread computes one cell at a time


def _executor(executor: str, scheduler: str | None, workers: int | None, config):
    """The process pool or Dask executor computing the cells (``config``: a ``WorkerConfig``)."""
    from l2obench.executors import DaskExecutor, ProcessPool

    if executor == "local":
        return ProcessPool(config, workers)
    return DaskExecutor(config, scheduler=scheduler, workers=workers)


@cli.command()
@click.option("--suite", required=True, help="Registered suite name, or a .toml/.json suite file.")
@click.option("--scale", type=click.Choice(["smoke", "small", "paper"]),
              help="Problem sizes and budgets [default: the suite's default_scale, else small].")
@click.option("--seeds", help="Comma-separated seeds (default: the suite's seeds at this scale).")
@click.option("--solvers", help="Comma-separated solver names or labels to run; a registered solver that the suite "
                                "does not list (a plugin's) runs on every problem whose family it supports.")
@click.option("--problems", help="Comma-separated problem families or labels to run.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--results", type=click.Path(file_okay=False),
              help="Run directory [default: l2obench-results/<suite>-<scale>].")
@click.option("--resume", is_flag=True,
              help="Continue the run in --results: finished cells whose identity (settings, parameters, budget, "
                   "seed, code) is unchanged are skipped; changed or corrupt cell files are moved aside and rerun.")
@click.option("--cell-timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Record a cell still running after this many seconds as 'timeout' and go on; 0: no limit "
                   "[default: 600 at scale smoke, 3600 at small, none at paper].")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Data and model cache [default: $L2OBENCH_CACHE or ~/.cache/l2obench].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the cache.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("-j", "--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="Cells computed at once, each in a worker process of this machine (1: in this process).")
@click.option("--executor", type=click.Choice(["local", "dask", "dask-local"]), default="local", show_default=True,
              help="Where cells are computed: this machine (-j), an existing Dask cluster (--scheduler), or a Dask "
                   "LocalCluster started here (--workers).")
@click.option("--scheduler", metavar="ADDRESS", help="Dask scheduler address, e.g. tcp://10.0.0.5:8786.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes of --executor dask-local "
              "[default: the cores available].")
@click.option("--threads", type=click.IntRange(min=1),
              help="Torch/BLAS threads per worker [default: cores // workers with -j and dask-local; 1 per cell "
                   "on a Dask cluster; torch's default in a serial run].")
@_plugin_option
@_strict_option
def run(suite, scale, seeds, solvers, problems, device, results, resume, cell_timeout, cache_dir, no_cache,
        no_progress, jobs, executor, scheduler, workers, threads, plugins, strict_plugins):
    """Run a suite: generate data, fit every solver, evaluate, write Parquet results."""
    from l2obench import threads as thread_policy

    thread_policy.passive_wait_if_busy()  # before torch is imported
    _check_execution(executor, jobs, scheduler, workers)
    from l2obench.identity import SuiteSource
    from l2obench.suites import default_scale, plan, with_solvers

    registry = _registry(plugins, strict_plugins)
    suite_name, definition, suite_path = _suite_definition(registry, suite)
    scale = scale or default_scale(suite_name, definition)  # an explicit --scale wins
    solvers = _comma_list(solvers, "--solvers")
    cells = plan(registry, suite_name, with_solvers(registry, suite_name, definition, solvers, scale), scale=scale,
                 seeds=_seeds(seeds), solvers=solvers, problems=_comma_list(problems, "--problems"))
    if not cells:
        raise UsageError("the selection leaves no cell to run")

    from l2obench import leaderboard
    from l2obench.cache import Cache
    from l2obench.results import read_results
    from l2obench.runner import Runner
    from l2obench.timing import resolve_device

    torch_device = resolve_device(device)
    results = Path(results) if results else Path("l2obench-results") / f"{Path(suite_name).stem}-{scale}"
    timeout = _cell_timeout(cell_timeout, scale)
    pool, execution = None, None
    if executor != "local" or jobs > 1:  # started before the run directory is, so a failure leaves none
        from l2obench.executors import WorkerConfig

        workers, threads = _worker_counts(executor, jobs, workers, threads)
        execution = {"executor": executor, "workers": workers, "threads": threads, "scheduler": scheduler}
        pool = _executor(executor, scheduler, workers, WorkerConfig(
            device=device if executor == "dask" else str(torch_device),
            cache_dir=str(Path(cache_dir).resolve()) if cache_dir else None, cache_enabled=not no_cache,
            cell_timeout=timeout, threads=threads, plugin_files=tuple(str(Path(f).resolve()) for f in plugins),
            strict_plugins=strict_plugins))
    with pool if pool is not None else contextlib.nullcontext(), \
            thread_policy.applied(threads if pool is None else None), \
            Runner(registry, cells, results, torch_device, Cache(cache_dir, enabled=not no_cache),
                   resume=resume, progress=not no_progress, argv=sys.argv, echo=click.echo,
                   suite=SuiteSource.of(suite_name, definition, suite_path), cell_timeout=timeout,
                   execution=execution) as runner:
        limit = f"{runner.cell_timeout:g} s per cell" if runner.cell_timeout else "no time limit per cell"
        where = f", on {pool.describe()}" if pool is not None else ""
        click.echo(f"l2obench {__version__}: suite {suite_name}, scale {scale}, {len(cells)} cells, "
                   f"device {torch_device}, {limit}{where}, results in {results}")
        try:
            summary = runner.run(pool)
        except KeyboardInterrupt:
            click.echo(f"\ninterrupted: finished cells are in {results}; continue with the same command "
                       f"and --resume", err=True)
            sys.exit(130)
        except OSError as exc:  # the driver could not write a result: a full disk, a folder gone read-only
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise UsageError(f"cannot write {exc.filename or results}: {reason}; the cells finished before it "
                             f"are in {results}: make room and continue with the same command and --resume"
                             ) from None
        board = leaderboard.table(read_results([runner.cells_dir]))
        (results / "leaderboard.md").write_text(leaderboard.render(board, "markdown"))
    click.echo("\n" + leaderboard.render(board, "terminal"))
    skipped = sum(o.skipped for o in summary.outcomes)
    timed_out = f", {summary.count('timeout')} timed out" if summary.count("timeout") else ""
    click.echo(f"{summary.count('ok')} ok, {summary.count('diverged')} diverged, {summary.count('failed')} failed"
               f"{timed_out} ({skipped} already on disk) in {summary.seconds:.1f} s; results: {runner.cells_dir}, "
               f"leaderboard: {results / 'leaderboard.md'}")
    not_ok = [outcome for outcome in summary.outcomes if outcome.status != "ok"]
    if not_ok:  # any cell that is not ok makes the run's exit code non-zero
        click.echo("cells not ok:", err=True)
        for outcome in not_ok:
            click.echo(f"  {outcome.cell.describe()}: {outcome.status}  {outcome.message}", err=True)
        sys.exit(1)


@cli.group("suite")
def suite_group():
    """Registered suites as files to copy and edit."""


@suite_group.command("show")
@click.argument("name")
@click.option("--scale", type=click.Choice(["smoke", "small", "paper"]),
              help="Resolve the suite at this scale (entries that run at it, its sizes and budget) "
                   "[default: every scale, as defined].")
@_plugin_option
@_strict_option
def suite_show(name, scale, plugins, strict_plugins):
    """Print a registered suite as a TOML suite file (l2obench suite show smoke > my_suite.toml), to edit and
    run with --suite my_suite.toml."""
    from l2obench.suite_toml import suite_toml

    registry = _registry(plugins, strict_plugins)
    registry.suite(name)  # an unknown name is an UnknownNameError
    record = registry.suites[name]
    command = f"l2obench suite show {name}" + (f" --scale {scale}" if scale else "")
    header = (f"The suite {name}{f' at scale {scale}' if scale else ''} ({record.plugin.origin}), printed by "
              f"`{command}`.\nSave it to a file, edit it, and run it with `l2obench run --suite FILE.toml`.")
    click.echo(suite_toml(name, record.spec.definition, scale, header=header), nl=False)


@cli.command("leaderboard")
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["terminal", "markdown", "latex", "csv"]), default="terminal",
              show_default=True)
@click.option("--metric", "metrics", multiple=True, help="Metric column(s) (default: the dB metrics).")
@click.option("--split", default="test", show_default=True, help="Split whose metrics are shown.")
@click.option("--output", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
@click.option("--break-even", "break_even", is_flag=True,
              help="Add each learned solver's break-even number of instances (see the README).")
def leaderboard_command(results, fmt, metrics, split, output, break_even):
    """Tabulate results (run directories or Parquet files): solvers x metrics per problem."""
    from l2obench import breakeven, leaderboard
    from l2obench.results import read_results

    with _pooling_warnings():
        df = read_results(results)
        text = leaderboard.render(leaderboard.table(df, metrics, split), fmt)
        if break_even:
            text += ("" if fmt == "csv" else "\n") + breakeven.render(breakeven.table(df), fmt)
    if output:
        with _writing(output):
            Path(output).write_text(text)
    else:
        click.echo(text, nl=False)


@contextlib.contextmanager
def _pooling_warnings():
    """Show ``l2obench.pooling`` warnings (a repeated cell, a shared label) as one line each on stderr."""
    import warnings

    from l2obench.pooling import PoolingWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PoolingWarning)
        yield
    shown = set()  # the leaderboard and the break-even table pool the same rows
    for warning in caught:
        if issubclass(warning.category, PoolingWarning):
            if str(warning.message) not in shown:
                click.echo(f"l2obench: warning: {warning.message}", err=True)
            shown.add(str(warning.message))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


@cli.command("compare")
@click.argument("run_a", type=click.Path())
@click.argument("run_b", type=click.Path())
@click.option("--metric", help="Metric compared [default: each family's primary metric].")
@click.option("--split", default="test", show_default=True, help="Split whose values are compared.")
@click.option("--subset", default="all", show_default=True, help="Subset, e.g. snr=20 or M=80.")
@click.option("--format", "fmt", type=click.Choice(["terminal", "markdown", "csv"]), default="terminal",
              show_default=True)
def compare_command(run_a, run_b, metric, split, subset, fmt):
    """Per cell present in both runs (same settings, solver, parameters, seed): A, B and B - A."""
    from l2obench import compare
    from l2obench.results import read_results

    with _pooling_warnings():
        table = compare.compare(read_results([run_a]), read_results([run_b]), metric, split, subset)
    click.echo(compare.render(table, fmt), nl=False)


@cli.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Directory written: index.html and its figures.")
@click.option("--split", default="test", show_default=True, help="Split whose metrics are shown.")
def report_command(results, output, split):
    """Write a static HTML report (leaderboards and figures) that opens offline."""
    from l2obench import report
    from l2obench.results import read_results

    with _pooling_warnings(), _writing(output):
        index = report.write_report(read_results(results), output, split=split, sources=results)
    click.echo(f"report: {index}")


def _named_values(text: str, what: str) -> tuple[str, dict]:
    """``"name[key=value,...]"`` -> ``(name, {key: value})``; values read as JSON, else as strings."""
    import json
    import re

    match = re.fullmatch(r"\s*([\w-]+)\s*(?:\[(.*)\])?\s*", text)
    if not match:
        raise UsageError(f"{what} {text!r}: expected NAME or NAME[key=value,...]")
    values = {}
    for item in filter(None, (part.strip() for part in (match.group(2) or "").split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {text!r}: expected key=value, got {item!r}")
        try:
            values[key.strip()] = json.loads(raw)
        except ValueError:
            values[key.strip()] = raw.strip()
    return match.group(1), values


def _ints(value: str, option: str) -> list[int]:
    try:
        numbers = [int(v) for v in _comma_list(value, option)]
    except (ValueError, UsageError):
        numbers = []
    if not numbers or min(numbers) < 1:
        raise UsageError(f"{option} takes positive integers separated by commas, got {value!r}")
    return numbers


@cli.command()
@click.option("--solver", "solver_text", required=True,
              help="Solver name with optional fixed parameters, e.g. 'gd[step=1.0]' or 'gd_layer[hidden=16]'.")
@click.option("--problem", "problem_text", required=True,
              help="Problem family with optional settings, e.g. 'quadratic[mode=given,mu=0.05]'.")
@click.option("--k", "ks", default="1,2,4,8,16,32", show_default=True,
              help="Iteration counts (each a separately fitted solver).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--instances", default=256, show_default=True, type=click.IntRange(min=1),
              help="Test instances probed.")
@click.option("--directions", default=8, show_default=True, type=click.IntRange(min=1),
              help="Random perturbation directions per instance.")
@click.option("--eps", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Size of the perturbations of data and parameters.")
@click.option("--steps", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Training steps of a learned solver (batches of 50).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--results", type=click.Path(file_okay=False),
              help="Run directory [default: l2obench-results/probe-<solver>-<family>].")
@click.option("--resume", is_flag=True, help="Continue the probe in --results; finished k are read back.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Data and model cache.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the cache.")
@_plugin_option
@_strict_option
def probe(solver_text, problem_text, ks, seed, instances, directions, eps, steps, device, results, resume,
          cache_dir, no_cache, plugins, strict_plugins):
    """Measure convergence, stability and sensitivity over k (thesis 4.4.1) of an iterative solver."""
    from l2obench.contracts import Budget
    from l2obench.probes import ProbeSpec, default_results, k_param, probe_table, run_probe

    registry = _registry(plugins, strict_plugins)
    solver, params = _named_values(solver_text, "--solver")
    family, settings = _named_values(problem_text, "--problem")
    spec = ProbeSpec(solver, family, settings, params, _ints(ks, "--k"), seed=seed, instances=instances,
                     directions=directions, eps=eps, budget=Budget(steps=steps, batch_size=50, eval_every=50,
                                                                   patience=10))
    cells = spec.cells(registry)

    from l2obench.cache import Cache
    from l2obench.runner import Runner
    from l2obench.timing import resolve_device

    results = Path(results) if results else default_results(solver, family)
    with Runner(registry, cells, results, resolve_device(device), Cache(cache_dir, enabled=not no_cache),
                resume=resume, progress=False, argv=sys.argv, echo=click.echo) as runner:
        rows = run_probe(registry, spec, runner)
    click.echo(f"{solver_text} on {problem_text}: worst case over {instances} instances x {directions} directions "
               f"(eps {eps:g}), and mean")
    click.echo(probe_table(rows, k_param(registry.solver(solver))).to_string(float_format=lambda v: f"{v:.4g}"))
    click.echo(f"results: {runner.cells_dir}")


def main(argv=None):
    """Entry point: l2obench errors become one message and their exit code."""
    try:
        cli.main(args=argv, prog_name="l2obench", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except L2OBenchError as exc:
        click.echo(f"l2obench: error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
