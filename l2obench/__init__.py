"""l2obench: a benchmark harness for learned and classical optimizers.

Importing this package is cheap (no torch): plugin registration modules import
``hookimpl``, ``Param``, ``SolverSpec`` and ``ProblemSpec`` from here, and
``l2obench list`` never loads a numerical library.
"""
from l2obench.hookspecs import hookimpl
from l2obench.specs import Param, ProblemSpec, SolverSpec, SuiteSpec

__version__ = "0.1.0"

__all__ = ["hookimpl", "Param", "ProblemSpec", "SolverSpec", "SuiteSpec", "__version__"]
