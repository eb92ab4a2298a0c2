"""Every run records the CPU kernel set behind its numbers in run.json; a resume under another is noted."""
import json
import os
import re

import torch

from l2obench.runner import KERNEL_ENV_VARS, cpu_kernels

TINY_SUITE = {
    "seeds": [0],
    "problems": [{"family": "lasso", "label": "tiny",
                  "settings": {"m": 10, "n": 20, "n_train": 32, "n_val": 24, "n_test": 24}}],
    "solvers": [{"solver": "fista", "label": "FISTA (T=10)", "params": {"max_iter": 10, "tol": 0.0, "lam": 0.05}}],
}


def _run(cli, tmp_path, *extra):
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(TINY_SUITE))
    code, out, err = cli("run", "--suite", str(suite), "--results", str(tmp_path / "run"), "--no-progress", *extra)
    assert code == 0, out + err
    return out, json.loads((tmp_path / "run" / "run.json").read_text())


def test_run_json_records_the_cpu_kernel_set(cli, tmp_path, monkeypatch):
    # Read once and cached by torch: setting the variable now records it without changing any kernel.
    capability = torch.backends.cpu.get_cpu_capability()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", capability.lower())
    _, info = _run(cli, tmp_path)
    kernels = info["cpu_kernels"]
    assert info["device"].startswith("cpu (")
    assert kernels["cpu_capability"] == capability and kernels["threads"] == torch.get_num_threads()
    assert kernels["env"] == {name: os.environ[name] for name in KERNEL_ENV_VARS if name in os.environ}
    assert kernels["env"]["ATEN_CPU_CAPABILITY"] == capability.lower()
    assert kernels["cpu"] and kernels["float32_matmul_precision"] == torch.get_float32_matmul_precision()
    if torch.backends.mkl.is_available():
        assert kernels["blas"] == "mkl" and re.match(r"\d{4}\.\d", kernels["mkl"]), kernels["mkl"]
    if torch.backends.mkldnn.is_available():
        assert re.match(r"v\d+\.\d+", kernels["onednn"]), kernels["onednn"]
    assert kernels == cpu_kernels()


def test_resume_under_another_kernel_set_is_recorded(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    torch.backends.cpu.get_cpu_capability()
    _, first = _run(cli, tmp_path)
    out, same = _run(cli, tmp_path, "--resume")
    assert "other CPU kernels" not in out and same == first
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    out, resumed = _run(cli, tmp_path, "--resume")
    assert "note: resuming with other CPU kernels" in out
    assert resumed["cpu_kernels"] == first["cpu_kernels"]
    (entry,) = resumed["resumed_with_other_kernels"]
    assert entry["cpu_kernels"]["env"]["ATEN_CPU_CAPABILITY"] == "default"
    assert entry["cpu_kernels"]["cpu_capability"] == first["cpu_kernels"]["cpu_capability"]  # set too late to act
