import os
import sys

import pytest

from l2obench.cli import main


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Test problems are tiny: one intra-op thread is as fast, and does not stall when
    the machine is busy (measured: tiny training tests 10-25x slower with 2 threads
    on a loaded 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _quiet_machine(monkeypatch):
    """In-process runs take the machine as quiet instead of sampling its CPU use for half a
    second each (tests of the busy case patch ``busy_cores`` themselves)."""
    from l2obench import threads

    monkeypatch.setattr(threads, "busy_cores", lambda sample=threads.BUSY_SAMPLE: 0.0)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache so no test reads another's entries."""
    monkeypatch.setenv("L2OBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def cli(capsys):
    """Run the command line in-process: returns (exit code, stdout, stderr)."""

    def run(*args):
        code = 0
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def venv_bin():
    return os.path.dirname(sys.executable)
