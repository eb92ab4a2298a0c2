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
