"""A small Gaussian-process surrogate with expected improvement, scored over an enumerated set.

The valid set of a tile space is small enough to enumerate (thousands to tens of thousands of
points), so the acquisition is maximised exactly: every unevaluated valid point is scored,
with no inner optimiser and no relaxation of the discrete choices. Points are given as
features in [0, 1] (each parameter's position among its ordered choices), so ordered
numbers stay ordered, unlike a categorical model.

The kernel is a Matérn 5/2 with one length scale per feature (ARD: an irrelevant parameter
gets a long length scale); its hyperparameters maximise the log marginal likelihood by Adam
on the analytic gradient, warm-started from the previous fit. Targets are log times,
standardised, so one slow outlier does not flatten the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SQRT5 = math.sqrt(5.0)
# Bounds on the log hyperparameters: length scales between 1/20 and 20 of the feature range,
# noise variance between 1e-6 and 1 (of the standardised target's unit variance).
LOG_LENGTH_BOUNDS = (math.log(0.05), math.log(20.0))
LOG_NOISE_BOUNDS = (math.log(1e-6), 0.0)
LOG_SIGNAL_BOUNDS = (math.log(0.05), math.log(20.0))
JITTER = 1e-8
LENGTH_PRIOR_MU = math.sqrt(2.0)
LENGTH_PRIOR_STD = math.sqrt(3.0)


def _matern52(r: np.ndarray) -> np.ndarray:
    return (1.0 + SQRT5 * r + 5.0 / 3.0 * r * r) * np.exp(-SQRT5 * r)


@dataclass
class GaussianProcess:
    """ARD Matérn 5/2 GP regression on features in [0, 1]^d."""

    dims: int
    fit_steps: int = 60
    learning_rate: float = 0.08
    # MAP instead of maximum likelihood: log length scales ~ N(mean, std^2) with the
    # dimension-scaled prior of Hvarfner et al. (ICML 2024), mean sqrt(2) + log(d) / 2 and
    # std sqrt(3), so few observations in many dimensions favour smooth models.
    length_prior: bool = False

    def __post_init__(self) -> None:
        # log length scales (d), log signal variance, log noise variance
        self.theta = np.concatenate([np.full(self.dims, math.log(0.5)), [0.0, math.log(1e-2)]])
        self._x = np.zeros((0, self.dims))
        self._alpha = np.zeros(0)
        self._chol: np.ndarray = np.zeros((0, 0))
        self._chol_inv: np.ndarray = np.zeros((0, 0))
        self._adam_m = np.zeros_like(self.theta)
        self._adam_v = np.zeros_like(self.theta)

    def _clip(self) -> None:
        d = self.dims
        self.theta[:d] = np.clip(self.theta[:d], *LOG_LENGTH_BOUNDS)
        self.theta[d] = np.clip(self.theta[d], *LOG_SIGNAL_BOUNDS)
        self.theta[d + 1] = np.clip(self.theta[d + 1], *LOG_NOISE_BOUNDS)

    def _nll_and_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        d, n = self.dims, len(y)
        length = np.exp(self.theta[:d])
        signal, noise = math.exp(self.theta[d]), math.exp(self.theta[d + 1])
        diff2 = ((x[:, None, :] - x[None, :, :]) / length) ** 2  # n x n x d
        r = np.sqrt(diff2.sum(axis=2))
        k = signal * _matern52(r)
        kn = k + (noise + JITTER) * np.eye(n)
        chol = np.linalg.cholesky(kn)
        chol_inv = np.linalg.inv(chol)  # one inversion serves alpha and K^-1
        inv = chol_inv.T @ chol_inv
        alpha = inv @ y
        nll = 0.5 * y @ alpha + np.log(np.diag(chol)).sum() + 0.5 * n * math.log(2 * math.pi)
        w = inv - np.outer(alpha, alpha)  # dNLL/dK = 0.5 * w
        # dk/d(log l_j) = signal * 5/3 * (1 + sqrt5 r) exp(-sqrt5 r) * diff2_j
        common = signal * 5.0 / 3.0 * (1.0 + SQRT5 * r) * np.exp(-SQRT5 * r)
        grad = np.empty_like(self.theta)
        grad[:d] = 0.5 * np.einsum("ij,ijk->k", w * common, diff2)
        grad[d] = 0.5 * np.sum(w * k)
        grad[d + 1] = 0.5 * noise * np.trace(w)
        if self.length_prior:
            mu, var = LENGTH_PRIOR_MU + 0.5 * math.log(d), LENGTH_PRIOR_STD**2
            nll += float(((self.theta[:d] - mu) ** 2).sum() / (2 * var))
            grad[:d] += (self.theta[:d] - mu) / var
        return float(nll), grad

    def fit(self, x: np.ndarray, y: np.ndarray) -> None:
        """Fit hyperparameters (a few Adam steps from the last fit) and condition on (x, y)."""
        for step in range(1, self.fit_steps + 1):
            try:
                _, grad = self._nll_and_grad(x, y)
            except np.linalg.LinAlgError:
                self.theta[self.dims + 1] += 1.0  # more noise until the matrix is definite
                self._clip()
                continue
            self._adam_m = 0.9 * self._adam_m + 0.1 * grad
            self._adam_v = 0.999 * self._adam_v + 0.001 * grad * grad
            m_hat = self._adam_m / (1 - 0.9**step)
            v_hat = self._adam_v / (1 - 0.999**step)
            self.theta -= self.learning_rate * m_hat / (np.sqrt(v_hat) + 1e-8)
            self._clip()
        self._condition(x, y)

    def restart(self, x: np.ndarray, y: np.ndarray, starts: int, rng: np.random.Generator) -> None:
        """Multi-start maximum likelihood: Adam from `starts` random hyperparameters (and the
        current ones), keeping the lowest negative log marginal likelihood, then condition."""
        best_theta, best_nll = self.theta.copy(), self._nll_or_inf(x, y)
        for _ in range(starts):
            other = GaussianProcess(
                self.dims, 4 * self.fit_steps, self.learning_rate, self.length_prior
            )
            other.theta[: self.dims] = rng.uniform(*LOG_LENGTH_BOUNDS, self.dims)
            other.theta[self.dims] = rng.uniform(*LOG_SIGNAL_BOUNDS)
            other.fit(x, y)
            nll = other._nll_or_inf(x, y)
            if nll < best_nll:
                best_theta, best_nll = other.theta.copy(), nll
        if not np.array_equal(best_theta, self.theta):
            self.theta = best_theta
            self._adam_m = np.zeros_like(self.theta)
            self._adam_v = np.zeros_like(self.theta)
        self._condition(x, y)

    def _nll_or_inf(self, x: np.ndarray, y: np.ndarray) -> float:
        try:
            return self._nll_and_grad(x, y)[0]
        except np.linalg.LinAlgError:
            return math.inf

    def _condition(self, x: np.ndarray, y: np.ndarray) -> None:
        d = self.dims
        noise = math.exp(self.theta[d + 1])
        for _ in range(8):
            k = self._kernel(x, x) + (noise + JITTER) * np.eye(len(y))
            try:
                self._chol = np.linalg.cholesky(k)
                break
            except np.linalg.LinAlgError:
                noise *= 10.0
        self._x = x
        self._chol_inv = np.linalg.inv(self._chol)  # n <= budget: small, and reused per point
        self._alpha = self._chol_inv.T @ (self._chol_inv @ y)

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = self.dims
        length = np.exp(self.theta[:d])
        a_s, b_s = a / length, b / length
        sq = (a_s * a_s).sum(1)[:, None] + (b_s * b_s).sum(1)[None, :] - 2.0 * a_s @ b_s.T
        r = np.sqrt(np.maximum(sq, 0.0))
        return math.exp(self.theta[d]) * _matern52(r)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation at each row of x."""
        ks = self._kernel(x, self._x)
        mean = ks @ self._alpha
        v = self._chol_inv @ ks.T
        var = math.exp(self.theta[self.dims]) - (v * v).sum(0)
        return mean, np.sqrt(np.maximum(var, 1e-12))


def _norm_pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _norm_cdf(z: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * (1.0 + erf(z / math.sqrt(2.0)))


def probability_of_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """P[f < best] under N(mean, std^2)."""
    return _norm_cdf((best - mean) / std)


def lower_confidence_bound(mean: np.ndarray, std: np.ndarray, beta: float = 2.0) -> np.ndarray:
    """-(mean - beta * std): larger is more promising (optimistic about uncertain points)."""
    return -(mean - beta * std)


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """EI of minimising: E[max(best - f, 0)] under N(mean, std^2)."""
    z = (best - mean) / std
    return (best - mean) * _norm_cdf(z) + std * _norm_pdf(z)
