import pytest
import torch

from l2obench.penalties import PENALTY_NAMES, penalty

LAM = 0.7


def _points():
    # Points in every piece of both penalties, away from the kinks (|x| = lam, gamma lam, a lam).
    return torch.tensor([-4.0, -2.3, -1.1, -0.3, 0.25, 0.9, 1.6, 2.2, 3.1, 5.0], dtype=torch.float64)


@pytest.mark.parametrize("name", PENALTY_NAMES)
def test_concave_gradient_matches_finite_differences(name):
    pen = penalty(name)
    x = _points().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: pen.q(v, LAM), (x,))
    (auto,) = torch.autograd.grad(pen.q(x, LAM).sum(), x)
    torch.testing.assert_close(pen.q_grad(x.detach(), LAM), auto)


@pytest.mark.parametrize("name", PENALTY_NAMES)
def test_value_is_l1_plus_concave_part_and_concave(name):
    pen = penalty(name)
    x = torch.linspace(-6, 6, 241, dtype=torch.float64)
    torch.testing.assert_close(pen(x, LAM), LAM * x.abs() + pen.q(x, LAM))
    q = pen.q(x, LAM)
    # Concave: second differences are <= 0 everywhere (kinks included).
    assert (q[2:] - 2 * q[1:-1] + q[:-2]).max() <= 1e-12
    # The derivative is continuous across the kinks.
    assert (pen.q_grad(x, LAM).diff().abs().max()) < 0.1


def test_closed_forms_at_known_points():
    mcp, scad = penalty("mcp", 3.0), penalty("scad", 3.7)
    big = torch.tensor([10.0], dtype=torch.float64)
    # Flat beyond gamma lam (MCP) and a lam (SCAD).
    torch.testing.assert_close(mcp(big, LAM), torch.tensor([3.0 * LAM**2 / 2], dtype=torch.float64))
    torch.testing.assert_close(scad(big, LAM), torch.tensor([(3.7 + 1) * LAM**2 / 2], dtype=torch.float64))
    small = torch.tensor([0.5 * LAM], dtype=torch.float64)
    torch.testing.assert_close(scad(small, LAM), LAM * small)  # l1 below lam
    torch.testing.assert_close(mcp(small, LAM), LAM * small - small**2 / 6)


def test_per_coordinate_lambda_broadcasts():
    x = torch.randn(4, 5, dtype=torch.float64)
    lam = torch.rand(5, dtype=torch.float64) + 0.1
    pen = penalty("scad")
    torch.testing.assert_close(pen.q(x, lam)[:, 2], pen.q(x[:, 2], float(lam[2])))


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="gamma > 1"):
        penalty("mcp", 0.5)
    with pytest.raises(ValueError, match="a > 2"):
        penalty("scad", 1.5)
    with pytest.raises(ValueError, match="unknown penalty"):
        penalty("lasso")
