"""The built-in plugins load through entry points from a plain (non-editable) install."""
import subprocess
import sys
from pathlib import Path

from l2obench.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def test_plain_install_used_from_another_directory(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert (target / "l2obench_plugins" / "__init__.py").exists()
    assert not (target / "plugins").exists() and not (target / "problems").exists()
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = ("import l2obench, l2obench_plugins, sys\n"
            "from l2obench.registry import Registry\n"
            "r = Registry()\n"
            "print(l2obench.__file__); print(l2obench_plugins.__file__)\n"
            "print(sorted(r.solvers)); print(sorted(r.problems)); print([p.ok for p in r.plugins])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(target)) and lines[1].startswith(str(target))
    here = Registry()  # the editable install this test runs in
    assert lines[2] == str(sorted(here.solvers)) and lines[3] == str(sorted(here.problems))
    assert "lista" in lines[2] and "lasso" in lines[3]
    assert lines[4] == "[True, True]"
