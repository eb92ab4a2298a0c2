"""An example l2obench plugin package: one classical and one learned solver.

This module is what the ``l2obench`` entry point names: it registers the
solvers' specs and imports no numerical library (each factory is a
``"module:Class"`` string, imported when a solver is built), so that
``l2obench list`` stays fast.
"""
from l2obench import Param, SolverSpec, hookimpl

BACKTRACKING_ISTA = SolverSpec(
    name="example_bt_ista",
    factory="l2obench_example_solver.backtracking_ista:BacktrackingISTA",
    families=("lasso", "slr"),
    learned=False,
    description="ISTA with a backtracking line search per instance (Beck & Teboulle 2009), batched",
    params={
        "lam": Param(0.05, (0.01, 0.02, 0.05, 0.1, 0.2), "l1 weight", type=float, ge=0),
        "shrink": Param(0.5, help="step factor of one backtracking step", type=float, gt=0, lt=1),
        "max_iter": Param(300, help="maximum iterations", type=int, ge=1),
        "tol": Param(1e-5, help="stop an instance when ||x_k - x_k-1|| <= tol * max(||x_k||, 1); 0: run max_iter",
                     type=float, ge=0),
    },
)

LEARNED_FISTA = SolverSpec(
    name="example_lfista",
    factory="l2obench_example_solver.learned_fista:LearnedFISTA",
    families=("lasso", "slr"),
    learned=True,
    description="unrolled FISTA with a learned step, threshold and momentum per layer, initialised as FISTA",
    params={
        "n_layers": Param(10, help="layers (iterations)", type=int, ge=1),
        "lam_init": Param(0.05, help="initial l1 weight of every layer", type=float, ge=0),
        "lr": Param(1e-2, help="Adam learning rate", type=float, gt=0),
        "gamma": Param(0.9, help="layer-loss discount: loss = sum_t gamma^(T-t) loss(x_t)", type=float, ge=0, le=1),
    },
)


@hookimpl
def l2obench_register_solvers(register):
    register(BACKTRACKING_ISTA)
    register(LEARNED_FISTA)
