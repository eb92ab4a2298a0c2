"""The benchmarks stay runnable: asv discovers them, the comparison script runs."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_asv_finds_and_checks_the_benchmarks():
    asv = Path(sys.executable).with_name("asv")
    out = subprocess.run([str(asv), "check", "--python=same"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No problems found" in out.stdout


def test_fista_vs_sklearn_script_meets_the_objective_criterion():
    # Smaller than the benchmark's 250 x 500 but not tiny: at m = 20 scikit-learn's stopping rule
    # (gap <= 1e-4 ||b||^2, used by both solvers) allows more than 1e-4 relative suboptimality.
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fista_vs_sklearn.py"), "--instances", "100",
                          "--m", "60", "--n", "120"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("within 0.0001 relative on 100.0% of instances") == 2 and "ratio" in out.stdout


def _slr_oracle():
    import importlib.util

    spec = importlib.util.spec_from_file_location("slr_oracle", ROOT / "benchmarks" / "slr_oracle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_oracle_least_squares_matches_per_instance_lstsq_and_is_exact_without_noise():
    import torch

    from l2obench_problems import SLR

    oracle = _slr_oracle().oracle_least_squares
    family = SLR.build(d=24, s=3, n_samples=[8, 14], snr=20, n_train=1, n_val=1, n_test=1)
    inst = family.draw(30, torch.Generator().manual_seed(0), {}, "test")
    A, b, x = inst.observed["A"].double(), inst.observed["b"].double(), inst.target["x"].double()
    x[0, x[0].nonzero()[0]] = 0.0  # one instance with a smaller support: its own group
    estimate = oracle(A, b, x)
    for i in (0, 1, 29):
        support = x[i].nonzero().squeeze(1)
        expected = torch.zeros_like(x[i])
        expected[support] = torch.linalg.lstsq(A[i][:, support], b[i].unsqueeze(1)).solution.squeeze(1)
        torch.testing.assert_close(estimate[i], expected)
    clean = SLR.build(d=24, s=3, n_samples=[8, 14], snr=None, n_train=1, n_val=1, n_test=1)
    inst = clean.draw(30, torch.Generator().manual_seed(1), {}, "test")
    torch.testing.assert_close(oracle(inst.observed["A"], inst.observed["b"], inst.target["x"]),
                               inst.target["x"].double(), atol=1e-4, rtol=0)


def test_slr_oracle_script_reads_a_run(cli, tmp_path):
    results = tmp_path / "run"
    code, _, err = cli("run", "--suite", "smoke", "--scale", "smoke", "--problems", "slr-tiny", "--solvers",
                       "FISTA (converged)", "--results", str(results), "--no-progress")
    assert code == 0, err
    script = [sys.executable, str(ROOT / "benchmarks" / "slr_oracle.py")]
    out = subprocess.run(script + [str(results)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "oracle least squares" in out.stdout and "FISTA (converged)" in out.stdout
    out = subprocess.run(script + [str(tmp_path / "missing")], capture_output=True, text=True)
    assert out.returncode == 2 and "error: no results" in out.stderr and "Traceback" not in out.stderr
