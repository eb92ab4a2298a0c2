"""asv benchmarks: batched G-ISTA and covariance-selection ADMM iterations on SPE instances."""
import torch

from l2obench.registry import Registry

REGISTRY = Registry()


class BatchedPrecisionIterations:
    """50 iterations (``tol = 0``) of G-ISTA or ADMM on 200 SPE instances of d = 30 (float32).

    ``alpha = 0.02`` keeps every G-ISTA instance moving for the 50 iterations
    (it would stop early only at its dtype's precision); an ADMM iteration is
    one batched ``eigh``, a G-ISTA iteration one or more batched Cholesky
    factorisations (backtracking) and one inverse.
    """

    params = ["gista", "covsel_admm"]
    param_names = ["solver"]
    timeout = 300

    def setup(self, solver):
        family = REGISTRY.problem("spe").build(d=30, M=100, n_train=1, n_val=1, n_test=200)
        self.observation = family.draw(200, torch.Generator().manual_seed(1), {}, "test").observation()
        self.solver = REGISTRY.solver(solver).build(alpha=0.02, tol=0.0, max_iter=50)

    def time_50_iterations(self, solver):
        self.solver.solve(self.observation)

    def peakmem_50_iterations(self, solver):
        self.solver.solve(self.observation)


class GraphicalLassoPerInstance:
    """scikit-learn's graphical lasso on 20 SPE instances of d = 30, one by one (the reference per-instance cost)."""

    timeout = 300

    def setup(self):
        family = REGISTRY.problem("spe").build(d=30, M=100, n_train=1, n_val=1, n_test=20)
        self.observation = family.draw(20, torch.Generator().manual_seed(1), {}, "test").observation()
        self.solver = REGISTRY.solver("glasso").build(alpha=0.1)

    def time_solve_20_instances(self):
        self.solver.solve(self.observation)
