"""Progress on a terminal: the run's bar (cells done, time left) below the cells' lines, a bar
while a classical solver tunes, and a plugin's warning on a line of its own."""
import io
import re
import warnings

import pytest
import torch

import l2obench
from l2obench.cache import Cache
from l2obench.contracts import Solution
from l2obench.runner import Runner
from l2obench.suites import plan
from l2obench.testing import registered
from l2obench.tuning import ClassicalSolver
from test_cli import TINY_SUITE


class Terminal(io.StringIO):
    """What tqdm takes for a terminal (``disable=None`` shows bars on one)."""

    def isatty(self):
        return True


class Talkative(ClassicalSolver):
    def __init__(self, factor=1.0):
        super().__init__(factor=factor)

    def solve(self, observation, trajectory=False):
        warnings.warn("the plugin has something to say", UserWarning)
        b, A = observation["b"], observation["A"]
        return Solution(self.factor * (b @ A.pinverse().T))


class Plugin:
    @l2obench.hookimpl
    def l2obench_register_solvers(self, register):
        register(l2obench.SolverSpec(name="warning", factory=Talkative, families=("lasso",),
                                     params={"factor": l2obench.Param(1.0, grid=[0.25, 0.5, 1.0])}))


@pytest.mark.parametrize("shown", [True, False])
def test_run_bar_tuning_bar_and_plugin_warnings_on_a_terminal(tmp_path, monkeypatch, shown):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    body = {**TINY_SUITE, "solvers": TINY_SUITE["solvers"] + [{"solver": "warning"}]}
    with registered(Plugin()) as registry, warnings.catch_warnings():
        warnings.simplefilter("always" if shown else "ignore")
        cells = plan(registry, "tiny", body, scale="small")
        with Runner(registry, cells, tmp_path / "run", torch.device("cpu"), Cache(enabled=False), progress=shown,
                    echo=lambda line: print(line, file=terminal)) as runner:
            summary = runner.run()
    assert [o.status for o in summary.outcomes] == ["ok", "ok"]
    # What a terminal shows of each line: the text after its last carriage return, less cursor moves.
    shown_text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", terminal.getvalue())
    screen = [line.rsplit("\r", 1)[-1].rstrip() for line in shown_text.split("\n")]
    assert sum(line.startswith("[1/2] tiny") and ": ok" in line for line in screen) == 1
    assert sum(line.startswith("[2/2] tiny") and ": ok" in line for line in screen) == 1
    if shown:
        said = [line for line in screen if "UserWarning: the plugin has something to say" in line]
        assert said and all(line.startswith(__file__) for line in said)  # each on a line of its own
        assert any(line.startswith("cells: 100%") and "2/2" in line for line in screen)  # the final state, kept
        assert "tuning Talkative" in terminal.getvalue()
    else:
        assert "cells:" not in terminal.getvalue() and "tuning" not in terminal.getvalue()
