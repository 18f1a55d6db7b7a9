"""μ-Lasso (Oramas et al. 2019, Eq. 1) against SciPy's SLSQP on the same problem, the L1
constraint, the unconstrained limit and compile-once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xaijax.interpretation import mu_lasso
from tests.helpers import assert_compiles_once

scipy_optimize = pytest.importorskip("scipy.optimize")


def _problem(m=12, n=40, c=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((m, n))
    lab = np.eye(c)[rng.integers(0, c, n)].T
    return x, lab


def _slsqp(x, lab, mu):
    """Independent reference: each column as a QP in (u, v) >= 0, w = u - v, Σ(u + v) <= μ."""
    m = x.shape[0]
    out = np.zeros((m, lab.shape[0]))
    for j, b in enumerate(lab):
        a = x.T

        def f(z):
            r = a @ (z[:m] - z[m:]) - b
            return r @ r

        def g(z):
            gw = 2 * a.T @ (a @ (z[:m] - z[m:]) - b)
            return np.concatenate([gw, -gw])

        res = scipy_optimize.minimize(
            f, np.zeros(2 * m), jac=g, method="SLSQP", bounds=[(0, None)] * (2 * m),
            constraints=[dict(type="ineq", fun=lambda z: mu - z.sum(), jac=lambda z: -np.ones(2 * m))],
            options=dict(ftol=1e-13, maxiter=2000))
        assert res.success, res.message
        out[:, j] = res.x[:m] - res.x[m:]
    return out


def _solve32(x, lab, mu):
    return mu_lasso(jnp.asarray(x, jnp.float32), jnp.asarray(lab, jnp.float32), jnp.float32(mu),
                    tol=1e-7, max_iter=5000)


def test_mu_lasso_matches_scipy_slsqp_with_active_constraint():
    mu = 0.5
    x, lab = _problem()
    ref = _slsqp(x, lab, mu)
    assert np.any(np.abs(ref).sum(0) > 0.999 * mu)   # the constraint binds
    w = np.asarray(_solve32(x, lab, mu))
    # float32: observed max |ΔW| 4.2e-5 for max |W| 0.34 (1.9e-5 of 0.63 at μ = 2)
    np.testing.assert_allclose(w, ref, atol=2e-4 * np.abs(ref).max())
    assert np.all(np.abs(w).sum(0) <= mu * (1 + 1e-5))
    with jax.enable_x64(True):  # float64: observed 1.2e-8
        w64 = np.asarray(mu_lasso(jnp.asarray(x), jnp.asarray(lab), mu, tol=1e-12, max_iter=20000))
    np.testing.assert_allclose(w64, ref, atol=1e-6 * np.abs(ref).max())


def test_mu_lasso_large_mu_is_least_squares_and_small_mu_is_sparse():
    x, lab = _problem(seed=1)
    ls = np.linalg.lstsq(x.T, lab.T, rcond=None)[0]
    w = np.asarray(_solve32(x, lab, 1e4))
    np.testing.assert_allclose(w, ls, atol=2e-4 * np.abs(ls).max())
    ws = np.asarray(_solve32(x, lab, 0.05))
    assert np.all(np.abs(ws).sum(0) <= 0.05 * (1 + 1e-5))
    assert np.all((np.abs(ws) > 0).sum(0) < x.shape[0])   # the L1 ball's corners: zeros


def test_mu_lasso_shapes_checked():
    with pytest.raises(ValueError, match=r"X \(m, N\) and L \(C, N\)"):
        mu_lasso(jnp.ones((5, 10)), jnp.ones((10, 3)))


def test_mu_lasso_compiles_once_for_new_data_and_mu(compiles):
    x, lab = _problem()
    x2, lab2 = _problem(seed=3)
    args = [(jnp.asarray(x, jnp.float32), jnp.asarray(lab, jnp.float32), jnp.float32(1.0)),
            (jnp.asarray(x2, jnp.float32), jnp.asarray(lab2, jnp.float32), jnp.float32(3.0))]
    assert_compiles_once(compiles, lambda a, b, mu: mu_lasso(a, b, mu, tol=1e-7, max_iter=5000),
                         args)
