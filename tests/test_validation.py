"""Input checked before compute: settings, memory, empty selections, file-system problems, kernels recorded."""
import errno
import io
import json
import os
from pathlib import Path

import pytest
import torch

import l2obench.cache
import l2obench.results
from l2obench.atomic import write_atomically
from l2obench.cache import Cache
from l2obench.data import make_splits
from l2obench.hashing import file_digest
from l2obench.memory import ENV_VAR, available_bytes, format_bytes
from l2obench.registry import Registry
from l2obench.results import read_results
from l2obench.runner import cpu_kernels, same_kernels

LASSO = {"m": 10, "n": 20, "n_train": 16, "n_val": 8, "n_test": 8}
RESULTS = Path(__file__).resolve().parents[1] / "results"


def _suite(tmp_path, settings=None, **top):
    body = {"seeds": [0], "problems": [{"family": "lasso", "label": "cs", "settings": {**LASSO, **(settings or {})}}],
            "solvers": [{"solver": "fista", "params": {"max_iter": 5}}], **top}
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(body))
    return path


def _refused(cli, tmp_path, path, *extra):
    """Run ``path``; check it is refused before anything is written, and return the error line."""
    results = tmp_path / "run"
    code, out, err = cli("run", "--suite", str(path), "--results", str(results), "--no-progress", *extra)
    assert code == 2, out + err
    assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1, err
    assert not results.exists()
    return err.strip()


@pytest.mark.parametrize("settings, where", [
    ({"m": "abc"}, "settings.m: must be an int >= 1, got 'abc'"),
    ({"n_test": 0}, "settings.n_test: must be an int >= 1, got 0"),
    ({"n_train": -3}, "settings.n_train: must be an int >= 1, got -3"),
    ({"m": 20.5}, "settings.m: must be an int >= 1, got 20.5"),
    ({"ood": {"p": "x"}}, "settings: ood.p must be a number in (0, 1], got 'x'"),
    ({"ood": {"snr": "loud"}}, "settings: ood.snr must be a number, a list of them or null, got 'loud'"),
])
def test_bad_lasso_settings_are_refused_when_the_suite_is_planned(cli, tmp_path, settings, where):
    path = _suite(tmp_path, settings)
    assert _refused(cli, tmp_path, path) == f"l2obench: error: {path}.problems[0].{where} (entry 'cs')"


def test_a_negative_budget_is_refused_when_the_suite_is_planned(cli, tmp_path):
    path = _suite(tmp_path, budget={"steps": -1})
    assert _refused(cli, tmp_path, path).endswith(f"{path}.budget.steps: must be an int >= 1, got -1")


def test_seeds_the_results_cannot_store_are_refused_from_the_file_and_the_command_line(cli, tmp_path):
    path = _suite(tmp_path, seeds=[0, 2**63])
    assert _refused(cli, tmp_path, path).endswith(f"{path}.seeds: seed {2**63} is outside 0 .. 2**63 - 1 (results "
                                                  "store seeds as int64)")
    path = _suite(tmp_path)
    assert _refused(cli, tmp_path, path, "--seeds", "-1").endswith("--seeds: seed -1 is outside 0 .. 2**63 - 1 "
                                                                   "(results store seeds as int64)")


def test_absurd_sizes_are_refused_by_their_memory_estimate(cli, tmp_path):
    path = _suite(tmp_path, {"m": 10**6, "n": 10**6})
    error = _refused(cli, tmp_path, path)
    assert error.startswith(f"l2obench: error: {path}.problems[0].settings: these sizes need at least 7.28 TiB")
    assert "available on this machine" in error


def test_the_memory_limit_can_be_set_for_cells_run_elsewhere(cli, tmp_path, monkeypatch):
    path = _suite(tmp_path)  # 10 x 20 float64 A plus 32 instances: 1600 + 32 * 128 = 5696 bytes
    monkeypatch.setenv(ENV_VAR, "5K")
    assert available_bytes() == 5120
    assert "need at least 5.56 KiB" in _refused(cli, tmp_path, path) and "than the 5 KiB $L2OBENCH_MEMORY" in \
        _refused(cli, tmp_path, path)
    monkeypatch.setenv(ENV_VAR, "lots")
    assert _refused(cli, tmp_path, path).endswith("L2OBENCH_MEMORY must be a size in bytes, e.g. 64G or 500M, "
                                                  "got 'lots'")
    monkeypatch.setenv(ENV_VAR, "6K")
    code, out, err = cli("run", "--suite", str(path), "--results", str(tmp_path / "run"), "--no-progress")
    assert code == 0, out + err


def test_format_bytes():
    assert [format_bytes(n) for n in (512, 2048, 3 * 2**30, 8e12)] == ["512 B", "2 KiB", "3 GiB", "7.28 TiB"]


@pytest.mark.parametrize("family, settings", [
    ("lasso", {**LASSO, "ood": {"snr": [10]}}),
    ("slr", {"d": 8, "s": 2, "n_samples": [6, 9], "holdout": 2, "n_train": 8, "n_val": 4, "n_test": 4}),
    ("spe", {"d": 5, "M": [10, 20], "n_train": 8, "n_val": 4, "n_test": 4}),
    ("quadratic", {"pool": 8, "n_train": 8, "n_val": 4, "n_test": 4}),
    ("denoising", {"crop": 16, "n_train": 4, "n_val": 2, "n_test": 5, "n_ood": 2}),
])
def test_memory_estimate_is_a_lower_bound_of_the_right_size(family, settings):
    """The estimate counts what the drawn data hold: at least the bytes they keep, at most the
    float64 copies they are drawn in (twice their float32 bytes) with a margin for small tensors."""
    spec = Registry().problem(family)
    resolved = spec.resolve(settings)
    splits = make_splits(spec, resolved, 0, Cache(enabled=False))
    stored = sum(t.numel() * t.element_size() for inst in splits.splits.values()
                 for t in inst.tensors().values() if isinstance(t, torch.Tensor))
    estimate = spec.build(**resolved).memory_bytes()
    assert 0.5 * stored <= estimate <= 2.5 * stored, (estimate, stored)


@pytest.mark.parametrize("option", ["--seeds", "--solvers", "--problems"])
def test_an_empty_selection_is_refused(cli, tmp_path, option):
    path = _suite(tmp_path)
    error = _refused(cli, tmp_path, path, option, "")
    assert error == f"l2obench: error: {option} is empty; give at least one value, or leave the option out"
    assert "has an empty item in 'fista,'" in _refused(cli, tmp_path, path, "--solvers", "fista,")


def _ran(cli, tmp_path, *extra):
    path = _suite(tmp_path)
    code, out, err = cli("run", "--suite", str(path), "--results", str(tmp_path / "run"), "--no-progress", *extra)
    assert code == 0, out + err
    return out, err


def test_an_unwritable_cache_runs_without_it_with_one_warning(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a file where the cache's folder should be: unwritable, even for root
    out, err = _ran(cli, tmp_path, "--cache-dir", str(blocker / "cache"))
    assert "1 ok, 0 diverged, 0 failed" in out
    assert err.count("warning: cannot write the cache") == 1, err
    assert f"cannot write the cache at {blocker / 'cache'} (Not a directory)" in err


def test_a_full_disk_under_the_cache_runs_without_it_with_one_warning(cli, tmp_path, monkeypatch):
    class FullDisk(io.RawIOBase):
        def writable(self):
            return True

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # torch.save writes the cache's files through this: every write fails as on a full disk.
    monkeypatch.setattr(l2obench.cache, "open", lambda path, mode: FullDisk(), raising=False)
    out, err = _ran(cli, tmp_path, "--cache-dir", str(tmp_path / "cache"))
    assert "1 ok, 0 diverged, 0 failed" in out
    assert err.count("warning: cannot write the cache") == 1, err
    assert "(No space left on device)" in err


def test_a_full_disk_under_the_results_stops_the_run_in_one_line_keeping_finished_cells(cli, tmp_path,
                                                                                       monkeypatch):
    path = _suite(tmp_path, solvers=[{"solver": "fista", "params": {"max_iter": 5}},
                                     {"solver": "ista", "params": {"max_iter": 5}}])
    writes = []

    def second_onto_a_full_disk(target, write):  # the first cell file is written, the second hits ENOSPC
        writes.append(target)
        if len(writes) == 1:
            return write_atomically(target, write)
        # What pyarrow raises on a full disk: an errno, no file name.
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(l2obench.results, "write_atomically", second_onto_a_full_disk)
    results = tmp_path / "run"
    code, out, err = cli("run", "--suite", str(path), "--results", str(results), "--no-progress", "--no-cache")
    assert code == 2 and "Traceback" not in out + err
    assert err.startswith(f"l2obench: error: cannot write {writes[1]}: No space left on device; the cells "
                          f"finished before it are in {results}") and len(err.splitlines()) == 1, err
    assert [p.name for p in (results / "cells").glob("*.parquet")] == [writes[0].name]
    monkeypatch.undo()
    code, out, err = cli("run", "--suite", str(path), "--results", str(results), "--no-progress", "--no-cache",
                         "--resume")
    assert code == 0 and "2 ok, 0 diverged, 0 failed (1 already on disk)" in out, out + err


def test_unreadable_entry_of_a_read_only_cache_is_skipped(tmp_path, monkeypatch, capsys):
    cache = Cache(tmp_path)
    path = cache.path("data", "k")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    Cache.checksum_path(path).write_text(file_digest(path, length=64))
    monkeypatch.setattr(Path, "unlink", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "read-only")))
    assert cache.load("data", "k") is None
    assert f"discarding cache entry {path}, recomputing it: it cannot be read" in capsys.readouterr().err
    assert path.exists()


def test_a_cache_entry_changed_into_something_that_still_loads_is_discarded(tmp_path, capsys):
    cache = Cache(tmp_path)
    cache.save("models", "k", {"w": torch.ones(3)})
    assert torch.equal(cache.load("models", "k")["w"], torch.ones(3)) and not capsys.readouterr().err
    torch.save({"w": torch.zeros(3)}, cache.path("models", "k"))  # loads fine: only the checksum tells
    assert cache.load("models", "k") is None
    assert "its bytes do not match the checksum written with it" in capsys.readouterr().err
    assert not cache.path("models", "k").exists() and not Cache.checksum_path(cache.path("models", "k")).exists()
    cache.save("models", "k", {"w": torch.ones(3)})
    Cache.checksum_path(cache.path("models", "k")).unlink()  # interrupted between the two writes
    assert cache.load("models", "k") is None and "it has no checksum" in capsys.readouterr().err


def test_changed_cached_data_is_drawn_again_with_the_hash_the_setting_produces(cli, tmp_path):
    cache = tmp_path / "cache"
    out, err = _ran(cli, tmp_path, "--cache-dir", str(cache))
    first = read_results([tmp_path / "run" / "cells"])
    [entry] = (cache / "data").glob("*.pt")
    splits = torch.load(entry, weights_only=True)
    splits["test"] = {k: v + 1.0 if v.is_floating_point() else v for k, v in splits["test"].items()}
    torch.save(splits, entry)  # still a valid entry of the right form: only the checksum tells
    code, out, err = cli("run", "--suite", str(_suite(tmp_path)), "--results", str(tmp_path / "again"),
                         "--no-progress", "--cache-dir", str(cache))
    assert code == 0 and f"discarding cache entry {entry}, recomputing it: its bytes do not match" in err, err
    again = read_results([tmp_path / "again" / "cells"])
    assert set(again["data_hash"].dropna()) == set(first["data_hash"].dropna()) != set()
    assert err.count("warning") == 1  # the model entry, fitted on the same data, is kept


def test_output_into_a_missing_folder_or_under_a_file_is_one_line(cli, tmp_path):
    _ran(cli, tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for args, path in [(["leaderboard", "--output", str(tmp_path / "missing" / "board.md")],
                        tmp_path / "missing" / "board.md"),
                       (["report", "-o", str(blocker / "report")], blocker / "report")]:
        code, out, err = cli(*args, str(tmp_path / "run"))
        assert code == 2, out + err
        assert err.startswith(f"l2obench: error: cannot write {path}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "missing").exists()


def test_run_json_records_the_wait_policy_in_effect_and_a_resume_does_not_compare_it(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    _ran(cli, tmp_path)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["cpu_kernels"]["wait"] == {"OMP_WAIT_POLICY": "ACTIVE"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    out, _ = _ran(cli, tmp_path, "--resume")
    assert "other CPU kernels" not in out
    assert "resumed_with_other_kernels" not in json.loads((tmp_path / "run" / "run.json").read_text())


def test_parallel_runs_record_the_workers_threads_and_wait_policy(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    kernels = cpu_kernels({"executor": "local", "workers": 2, "threads": 3})
    assert kernels["threads"] == 3 and kernels["wait"] == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert {kernels["env"][var] for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")} == {"3"}
    cluster = cpu_kernels({"executor": "dask", "workers": None, "threads": 1})
    assert cluster["env"] is None and cluster["wait"] is None  # an existing cluster's environment is not seen


@pytest.mark.parametrize("run", sorted(p.parent.name for p in RESULTS.glob("*/run.json")))
def test_published_runs_resume_on_the_same_kernels_whatever_the_wait_policy(run):
    recorded = json.loads((RESULTS / run / "run.json").read_text()).get("cpu_kernels")
    if recorded is None:  # recorded before cpu_kernels was: every resume is noted, as before
        assert not same_kernels(None, cpu_kernels())
        return
    assert same_kernels(recorded, {**recorded, "wait": {"OMP_WAIT_POLICY": "PASSIVE"}})
    assert same_kernels({**recorded, "wait": {"OMP_WAIT_POLICY": "ACTIVE"}}, recorded)
    assert not same_kernels(recorded, {**recorded, "threads": recorded["threads"] + 1})


def test_planning_errors_name_the_entry_by_its_label_as_well_as_its_index(cli, tmp_path):
    suite = tmp_path / "labelled.json"
    suite.write_text(json.dumps({"problems": [{"family": "lasso", "label": "cs-small", "settings": {"m": "abc"}}],
                                 "solvers": [{"solver": "fista"}]}))
    code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--no-progress")
    assert code == 2 and "problems[0].settings.m: must be an int" in err and "(entry 'cs-small')" in err, err
    suite.write_text(json.dumps({"problems": [{"family": "lasso"}],
                                 "solvers": [{"solver": "fista", "label": "FISTA short", "params": {"max_iter": -1}}]}))
    code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / "r"), "--no-progress")
    assert code == 2 and "solvers[0].params.max_iter" in err and "(entry 'FISTA short')" in err, err
