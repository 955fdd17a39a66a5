"""Additive Gaussian-process ranker: first- and second-order label interactions with ARD.

Duvenaud, Nickisch & Rasmussen 2011, "Additive Gaussian Processes" (NeurIPS): the additive
kernels of orders 1 and 2, evaluated by the Newton–Girard formulae. With a base kernel
s_j(x, x') ∈ [0, 1] per label j and relevances θ_j > 0, the kernel of order 1 sums the
labels' effects and the kernel of order 2 every pair's interaction,

    e₁ = Σ_j θ_j s_j,   e₂ = Σ_{i<j} θ_i θ_j s_i s_j = (e₁² − Σ_j θ_j² s_j²) / 2,

each normalised by its value at x = x' (e₁(θ), e₂(θ)), and the GP's kernel is

    k(x, x') = σ₀² + σ_c² e₁ᶜ/e₁ᶜ(θ) + σ_o² e₁ᵒ/e₁ᵒ(θ) + σ₂² e₂/e₂(θ) + Σ_h v_h u_h u'_h

(+ the noise variance on the diagonal), where e₁ᶜ sums the categorical labels and e₁ᵒ the
numeric (ordered) ones: a space of 300 quantization labels and 30 sizes would otherwise dilute the
sizes' effects among the schemes' (ours; the Duvenaud kernel has one σ per order).

The base kernel of a categorical label is the overlap 1[x_j = x'_j] (one block of one-hot
columns); that of a numeric label (an ordinal column in [0, 1]: a width, a depth) is
exp(−(o − o')² / 2ℓ²) with one ℓ shared by the numeric labels (ℓ → 0 is the overlap, a
large ℓ a smooth trend). Columns outside the label layout (cost features, zero-cost weak
labels appended as features) enter the last, linear term with one variance v_h each, so a
weak label can help in either direction: its sign is learned from the strong labels.

σ₂ is what makes the ranker interaction-aware, and the marginal likelihood sets it: on
the 8-label test problem of `tests/predictors/test_additive_gp.py` (60 labels) it fits
σ_c² ≈ 1–2.5, σ₂² ≈ 0.01–0.02 to an additive truth and σ₂² ≈ 0.6–1.3 above σ_c² to one
with two pairwise tables.

The GP sees normal scores of the labels' ranks (a Gaussian copula, as in
`predictors.gaussian_process`), so heavy-tailed noise and outliers do not bend it. The
hyperparameters (log θ, log ℓ, log σ², log v) are MAP-II estimates: the log marginal
likelihood (Rasmussen & Williams 2006, eq. 5.8) plus Gaussian priors on the logs (θ around
1, so 20 labels cannot make 300 relevances overfit), maximised by L-BFGS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from nas.errors import ConfigError
from predictors.base import NotFittedError, Predictor, check_X, check_Xy, register_predictor
from predictors.gaussian_process import normal_scores

_JITTER = 1e-6
_CHUNK = 1024  # candidate rows per kernel block in predict


def layout_from_data(x: np.ndarray) -> dict[str, list]:
    """A layout when the encoder gave none: every 0/1 column is a label of its own, every
    other column a linear feature."""
    binary = np.all((x == 0) | (x == 1), axis=0)
    return {"groups": [[int(c)] for c in np.flatnonzero(binary)], "ordinal": [], "covered": []}


@register_predictor("additive_gp")
class AdditiveGPRanker(Predictor):
    """Additive GP of orders 1 and 2 with label ARD (see the module docstring).

    layout: ``{"groups": [[col, ...] per categorical label], "ordinal": [col per numeric
    label], "covered": [one-hot columns of the numeric labels]}`` over the feature columns
    (`predictors.SpaceEncoder.layout()`); columns in none of them are linear features. None: derived from the data (`layout_from_data`).
    order: 1 (additive) or 2 (additive + pairwise). iters: L-BFGS iterations.
    """

    def __init__(
        self,
        layout: Mapping[str, Sequence] | None = None,
        order: int = 2,
        iters: int = 50,
        relevance_prior_sd: float = 1.0,
        higher_is_better: bool = False,
        seed: int = 0,
    ) -> None:
        if order not in (1, 2):
            raise ConfigError(f"additive_gp: order must be 1 or 2, got {order!r}")
        if iters < 1:
            raise ConfigError(f"additive_gp: iters must be ≥ 1, got {iters!r}")
        lay = None
        if layout is not None:
            lay = {
                "groups": [[int(c) for c in g] for g in layout.get("groups", [])],
                "ordinal": [int(c) for c in layout.get("ordinal", [])],
                "covered": [int(c) for c in layout.get("covered", [])],
            }
        super().__init__(
            higher_is_better,
            layout=lay,
            order=int(order),
            iters=int(iters),
            relevance_prior_sd=float(relevance_prior_sd),
            seed=int(seed),
        )
        self.layout, self.order, self.iters = lay, int(order), int(iters)
        self.prior_sd, self.seed = float(relevance_prior_sd), int(seed)
        self._X: np.ndarray | None = None  # (N, F) training features
        self._y: np.ndarray | None = None  # (N,) labels
        self._hyper: dict[str, torch.Tensor] | None = None
        self._alpha: torch.Tensor | None = None  # (N,) K⁻¹ z
        self._chol: torch.Tensor | None = None  # (N, N) Cholesky factor of K + σ_n² I

    # -- structure -------------------------------------------------------------------------------
    def _structure(self, n_features: int, x: np.ndarray) -> None:
        lay = self.layout if self.layout is not None else layout_from_data(x)
        groups, ordinal = lay["groups"], lay["ordinal"]
        used = {c for g in groups for c in g} | set(ordinal) | set(lay.get("covered", ()))
        if used and max(used) >= n_features:
            raise ConfigError(
                f"additive_gp: the layout names column {max(used)} but X has {n_features} "
                "features; build the layout from the encoder that encodes X (encoder.layout())"
            )
        # one-hot column → its group's relevance index, as a (F,) map with -1 elsewhere
        col_group = np.full(n_features, -1, dtype=np.int64)
        for g, cols in enumerate(groups):
            col_group[cols] = g
        self._col_group = torch.as_tensor(col_group)
        self._n_cat = len(groups)
        self._ord = torch.as_tensor(ordinal, dtype=torch.long)
        self._lin = torch.as_tensor(
            [c for c in range(n_features) if c not in used], dtype=torch.long
        )

    # -- the kernel ------------------------------------------------------------------------------
    def _kernel(self, h: Mapping[str, torch.Tensor], a: torch.Tensor, b: torch.Tensor):
        """k(a, b) (n, m) for hyperparameters `h` (see the module docstring)."""
        theta = torch.exp(h["log_theta"])  # (G,) categorical labels, then numeric ones
        n, m = a.shape[0], b.shape[0]
        k = torch.exp(h["log_s0"]) + a.new_zeros(n, m)
        e1 = a.new_zeros(n, m)
        p2 = a.new_zeros(n, m)
        if self._n_cat:
            sel = self._col_group >= 0
            w = torch.zeros(a.shape[1], dtype=a.dtype)
            w[sel] = theta[self._col_group[sel]]
            # one-hot rows: Σ_cols w_c a_c b_c = Σ_j θ_j 1[a_j = b_j]
            e1c = (a * w) @ b.T
            k = k + torch.exp(h["log_s1"]) * e1c / theta[: self._n_cat].sum()
            e1 = e1 + e1c
            p2 = p2 + (a * w**2) @ b.T
        if len(self._ord):
            ell = torch.exp(h["log_ell"])
            oa, ob = a[:, self._ord], b[:, self._ord]  # (n, O), (m, O)
            s = torch.exp(-((oa[:, None, :] - ob[None, :, :]) ** 2) / (2 * ell**2))  # (n, m, O)
            t = theta[self._n_cat :]
            e1o = (s * t).sum(-1)
            # numeric labels (sizes, depths) have a variance of their own: among hundreds
            # of categorical labels (quant schemes) their effects would otherwise be diluted
            k = k + torch.exp(h["log_s1o"]) * e1o / t.sum()
            e1 = e1 + e1o
            p2 = p2 + (s**2 * t**2).sum(-1)
        if self.order == 2 and len(theta) > 1:
            s1, s2 = theta.sum(), (theta**2).sum()
            k = k + torch.exp(h["log_s2"]) * ((e1**2 - p2) / 2) / ((s1**2 - s2) / 2)
        if len(self._lin):
            v = torch.exp(h["log_v"])
            k = k + (a[:, self._lin] * v) @ b[:, self._lin].T
        return k

    def _initial(self) -> dict[str, torch.Tensor]:
        g = self._n_cat + len(self._ord)
        return {
            "log_theta": torch.zeros(g, dtype=torch.float64),
            "log_ell": torch.tensor(math.log(0.5), dtype=torch.float64),
            "log_s0": torch.tensor(math.log(0.1), dtype=torch.float64),
            "log_s1": torch.tensor(0.0, dtype=torch.float64),
            "log_s1o": torch.tensor(0.0, dtype=torch.float64),
            "log_s2": torch.tensor(math.log(0.3), dtype=torch.float64),
            "log_v": torch.full((len(self._lin),), math.log(0.1), dtype=torch.float64),
            "log_noise": torch.tensor(math.log(0.5), dtype=torch.float64),
        }

    def _prior(self, h: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """−log prior of the hyperparameters (Gaussian on their logs, up to a constant)."""
        out = 0.5 * ((h["log_theta"] / self.prior_sd) ** 2).sum()
        out = out + 0.5 * (h["log_ell"] - math.log(0.5)) ** 2
        out = out + 0.5 * (((h["log_v"] - math.log(0.1)) / 2.0) ** 2).sum()
        # the variances σ² have flat priors on their logs: the evidence may switch a term off
        return out

    def _factor(self, h, x: torch.Tensor) -> torch.Tensor:
        k = self._kernel(h, x, x)
        eye = torch.eye(len(x), dtype=x.dtype)
        return torch.linalg.cholesky(k + (torch.exp(h["log_noise"]) + _JITTER) * eye)

    # -- fitting -----------------------------------------------------------------------------------
    def pretrain(self, X_weak: np.ndarray, W: np.ndarray) -> AdditiveGPRanker:
        """Nothing to do: weak labels reach this ranker as feature columns (the linear term;
        the predictor-guided search appends zero-cost ones, `nas.ranking.ZeroCost`)."""
        return self

    def _objective(self, h: Mapping[str, torch.Tensor], xt: torch.Tensor, z: torch.Tensor):
        """−log p(z | X, h) − log p(h): eq. 5.8 without its constant, plus the prior."""
        chol = self._factor(h, xt)
        alpha = torch.cholesky_solve(z[:, None], chol)[:, 0]
        return 0.5 * z @ alpha + torch.log(torch.diagonal(chol)).sum() + self._prior(h)

    def _optimise(self, h: dict[str, torch.Tensor], xt: torch.Tensor, z: torch.Tensor) -> float:
        """L-BFGS on `h` in place; the final objective (inf when the run failed, and `h`
        then keeps its start)."""
        start = {k: v.detach().clone() for k, v in h.items()}
        params = [v for v in h.values() if v.numel()]
        opt = torch.optim.LBFGS(params, max_iter=self.iters, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = self._objective(h, xt, z)
            loss.backward()
            return loss

        try:
            opt.step(closure)
            with torch.no_grad():
                value = float(self._objective(h, xt, z))
            if np.isfinite(value) and all(torch.isfinite(v).all() for v in h.values()):
                return value
        except (RuntimeError, ValueError):  # a line search into a non-PD kernel
            pass
        with torch.no_grad():
            for k, v in h.items():
                v.copy_(start[k])
        return float("inf")

    def fit(self, X, y, weak=None, X_val=None, y_val=None) -> AdditiveGPRanker:
        x, t = check_Xy(X, y)
        self._structure(x.shape[1], x)
        xt = torch.as_tensor(x, dtype=torch.float64)
        z = torch.as_tensor(normal_scores(t), dtype=torch.float64)
        h = {k: v.clone().requires_grad_(True) for k, v in self._initial().items()}
        self._optimise(h, xt, z)
        return self._condition(x, t, {k: v.detach() for k, v in h.items()})

    def condition(self, X, y) -> AdditiveGPRanker:
        """The posterior on a new training set with this fit's hyperparameters (no
        optimisation: one Cholesky factorisation). An ensemble member on a subset of the
        labels costs that much (`nas.strategies.predictor_guided`)."""
        self._require()
        x, t = check_Xy(X, y)
        return self._condition(x, t, self._hyper)

    def _condition(self, x: np.ndarray, t: np.ndarray, hyper) -> AdditiveGPRanker:
        xt = torch.as_tensor(x, dtype=torch.float64)
        z = torch.as_tensor(normal_scores(t), dtype=torch.float64)
        self._hyper, self._chol = hyper, self._factor(hyper, xt)
        self._alpha = torch.cholesky_solve(z[:, None], self._chol)[:, 0]
        self._X, self._y, self._xt = x, t, xt
        return self

    # -- inference ---------------------------------------------------------------------------------
    def _require(self) -> None:
        if self._alpha is None:
            raise NotFittedError("additive_gp is not fitted; call fit(X, y) first")

    def _posterior(self, X, std: bool) -> tuple[np.ndarray, np.ndarray | None]:
        self._require()
        x = check_X(X, self._X.shape[1])
        mus, sds = [], []
        with torch.no_grad():
            for start in range(0, len(x), _CHUNK):
                xb = torch.as_tensor(x[start : start + _CHUNK], dtype=torch.float64)
                kb = self._kernel(self._hyper, xb, self._xt)  # (m, N)
                mus.append((kb @ self._alpha).numpy())
                if std:
                    v = torch.cholesky_solve(kb.T, self._chol)  # (N, m)
                    prior = torch.diagonal(self._kernel(self._hyper, xb[:1], xb[:1]))[0]
                    var = prior - (kb * v.T).sum(1)  # stationary: k(x, x) is one value
                    sds.append(torch.sqrt(var.clamp_min(0.0)).numpy())
        mu = np.concatenate(mus) if mus else np.zeros(0)
        # normal scores are ordered like y: lower = better unless higher_is_better
        return mu, (np.concatenate(sds) if sds else np.zeros(0)) if std else None

    def predict(self, X) -> np.ndarray:
        return self._posterior(X, std=False)[0]

    def predict_std(self, X) -> np.ndarray:
        """Posterior standard deviation (N,) on the normal-score scale."""
        return self._posterior(X, std=True)[1]

    @property
    def hyperparameters(self) -> dict[str, np.ndarray]:
        """The fitted hyperparameters (natural scale: θ, ℓ, the variances s0, s1 (categorical
        labels), s1o (numeric labels), s2 (pairs), v (linear features) and noise)."""
        self._require()
        return {k.removeprefix("log_"): np.exp(v.numpy()) for k, v in self._hyper.items()}

    # -- persistence ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._require()
        tensors = {"X": torch.from_numpy(self._X), "y": torch.from_numpy(self._y)}
        tensors.update({f"hyper.{k}": v.clone() for k, v in self._hyper.items()})
        return {"tensors": tensors}

    def load_state_dict(self, state: dict[str, Any]) -> AdditiveGPRanker:
        """Restores the training set and the fitted hyperparameters (no refit)."""
        tensors = state.get("tensors") or {}
        if "X" not in tensors or "y" not in tensors:
            raise ConfigError("additive_gp state lacks its training set (X, y); save it again")
        x = tensors["X"].numpy().astype(np.float32)
        t = tensors["y"].numpy().astype(np.float64)
        self._structure(x.shape[1], x)
        hyper = {
            k.removeprefix("hyper."): v.to(torch.float64)
            for k, v in tensors.items()
            if k.startswith("hyper.")
        }
        return self._condition(x, t, hyper)
