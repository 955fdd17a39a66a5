"""LambdaRank predictor: an MLP scorer trained with the LambdaRank gradient, with
weak-label pretraining and strong-label fine-tuning.

Burges 2010, "From RankNet to LambdaRank to LambdaMART: An Overview" (MSR-TR-2010-82),
eq. 8 with the |ΔNDCG| weighting of §4: for a list with scores s (higher = better) and
gains G = 2^grade − 1 (grades as in `predictors.metrics`), every pair (i, j) with
G_i > G_j contributes

    C_ij = |ΔNDCG_ij| · log(1 + exp(−σ (s_i − s_j)))
    λ_ij = ∂C_ij/∂s_i = −σ / (1 + exp(σ (s_i − s_j))) · |ΔNDCG_ij|,   ∂C_ij/∂s_j = −λ_ij
    |ΔNDCG_ij| = |G_i − G_j| · |1/log2(1 + p_i) − 1/log2(1 + p_j)| / IDCG

(|ΔNDCG| is a constant weight: no gradient flows through it), so the gradient of
Σ C_ij is Burges' λ_i = Σ_{j:(i,j)} λ_ij − Σ_{j:(j,i)} λ_ji. All pairs of a (B, L) batch
of lists are (B, L, L) matrices; there is no Python loop over pairs.

Positions p in |ΔNDCG|: ``positions="predicted"`` takes them from the current order of
the scores (classic LambdaRank: the weight is the NDCG change of swapping the pair in the
present ranking); ``positions="label"`` from the ideal (label) order, a fixed weight per
pair. Default: "label", chosen by experiment on the synthetic problem of
tests/predictors (16 labels, 4 stages; held-out set of 400; defaults otherwise):

    setting (seeds)                      NDCG@10 label / predicted   Kendall τ label / predicted
    100 labels, scratch (0–7)            0.958 / 0.937               0.784 / 0.757
    100 labels, weak-pretrained (0–7)    0.977 / 0.976               0.858 / 0.833
    20 labels, scratch (0–7)             0.605 / 0.554               0.321 / 0.310

"label" was never worse on average and better on most seeds; it also makes the pair
weights independent of the current scores. The test
`test_lambdarank.py::test_positions_default_is_not_worse` re-runs the first row on
seeds 0–2 (0.980 / 0.965 and τ 0.810 / 0.779 at the time of writing) and fails if the
default falls behind.

Weak labels (`pretrain`): a shared trunk with one linear head per weak-label column
(e.g. supernet score, params, latency), regressed on standardized targets (masked MSE,
NaN = missing). Fine-tuning (`fit`) then trains the ranking head on the same trunk with
LambdaRank on the few strong labels. The ranking head is first initialised as a linear
probe on the weak heads — the ridge fit of the standardized strong labels on the weak
heads' outputs, composed into one linear layer (LP-FT: Kumar et al. 2022, "Fine-Tuning
can Distort Pretrained Features and Underperform Out-of-Distribution") — so fine-tuning
starts from the best weak-label combination rather than from noise. Early stopping on
validation NDCG (X_val/y_val, or a held-out `val_fraction` of the strong labels) keeps
the best weights, the probe initialisation (step 0) included.

On the synthetic problem (weak pool of 2000 whose supernet score has τ 0.68 with the
truth; seeds 0–4; NDCG@10 / τ on 400 held-out): at 20 strong labels, scratch 0.653 /
0.334, pretrained with a random head 0.732 / 0.388, pretrained with the probe 0.889 /
0.687 — which only matches the supernet score used alone (0.888 / 0.684): 16 training
labels do not correct the weak label's bias. At 100 labels the pretrained model beats
both (0.977 / 0.858, seeds 0–7).
"""

from __future__ import annotations

import copy
import itertools
import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from nas.errors import ConfigError
from predictors.base import (
    NotFittedError,
    Predictor,
    check_X,
    check_Xy,
    register_predictor,
)
from predictors.metrics import MAX_GRADE, ndcg_at_k

log = logging.getLogger(__name__)

POSITIONS = ("predicted", "label")
_TINY = 1e-12


# -- the loss -------------------------------------------------------------------------------
def list_gains(goodness: torch.Tensor, max_grade: float = MAX_GRADE) -> torch.Tensor:
    """Gains 2^grade − 1 of each list (B, L) from goodness (higher = better), with the
    rank-based grades of `predictors.metrics.grades` (ties share their average rank)."""
    n = goodness.shape[1]
    if n == 1:
        return torch.full_like(goodness, 2.0**max_grade - 1.0)
    gi, gj = goodness[:, :, None], goodness[:, None, :]  # (B, L, 1), (B, 1, L)
    below = (gj < gi).sum(-1).to(goodness.dtype)  # (B, L) items worse than i
    ties = (gj == gi).sum(-1).to(goodness.dtype) - 1.0  # (B, L) others tied with i
    rank0 = below + 0.5 * ties  # 0-based average rank from the worst
    return torch.exp2(max_grade * rank0 / (n - 1)) - 1.0


def _positions(key: torch.Tensor) -> torch.Tensor:
    """0-based position of every item when each list (B, L) is sorted by key, descending."""
    order = torch.argsort(key, dim=1, descending=True, stable=True)  # (B, L) item at position
    pos = torch.empty_like(order)
    ar = torch.arange(key.shape[1], device=key.device).expand_as(order)
    return pos.scatter_(1, order, ar)  # (B, L) position of item


def delta_ndcg(scores: torch.Tensor, gains: torch.Tensor, positions: str) -> torch.Tensor:
    """|ΔNDCG_ij| (B, L, L): the NDCG change of swapping items i and j of each list."""
    if positions not in POSITIONS:
        raise ConfigError(f"positions={positions!r} is unknown; use one of {POSITIONS}")
    key = scores.detach() if positions == "predicted" else gains
    disc = 1.0 / torch.log2(_positions(key).to(gains.dtype) + 2.0)  # (B, L) 1/log2(1 + p)
    n = gains.shape[1]
    ideal_disc = 1.0 / torch.log2(torch.arange(n, device=gains.device, dtype=gains.dtype) + 2.0)
    idcg = (torch.sort(gains, dim=1, descending=True).values * ideal_disc).sum(1)  # (B,)
    dg = gains[:, :, None] - gains[:, None, :]  # (B, L, L) G_i − G_j
    dd = disc[:, :, None] - disc[:, None, :]  # (B, L, L)
    return (dg * dd).abs() / idcg.clamp_min(_TINY)[:, None, None]


def lambdarank_loss(
    scores: torch.Tensor,
    gains: torch.Tensor,
    positions: str = "label",
    sigma: float = 1.0,
) -> torch.Tensor:
    """Mean over lists of Σ_{G_i > G_j} |ΔNDCG_ij| · log(1 + exp(−σ(s_i − s_j))).

    scores, gains: (B, L). Its gradient w.r.t. the scores is Burges' λ (see `lambdas`).
    """
    if scores.ndim == 1:
        scores, gains = scores[None], gains[None]
    w = delta_ndcg(scores, gains, positions).detach()  # (B, L, L) constant pair weights
    pair = (gains[:, :, None] > gains[:, None, :]).to(scores.dtype)  # (B, L, L) i above j
    sd = scores[:, :, None] - scores[:, None, :]  # (B, L, L) s_i − s_j
    return (pair * w * F.softplus(-sigma * sd)).sum((1, 2)).mean()


def lambdas(
    scores: torch.Tensor, gains: torch.Tensor, positions: str = "label", sigma: float = 1.0
) -> torch.Tensor:
    """Burges' λ_i (B, L) in closed form: Σ_j λ_ij over pairs where i is the more relevant
    minus Σ_j λ_ji where it is the less; gradient descent moves s_i by −η λ_i."""
    if scores.ndim == 1:
        scores, gains = scores[None], gains[None]
    w = delta_ndcg(scores, gains, positions)
    pair = (gains[:, :, None] > gains[:, None, :]).to(scores.dtype)
    sd = scores[:, :, None] - scores[:, None, :]
    lam = -sigma * torch.sigmoid(-sigma * sd) * w * pair  # (B, L, L) λ_ij for i above j
    return lam.sum(2) - lam.sum(1)


# -- the network ----------------------------------------------------------------------------
class RankNet(nn.Module):
    """Shared MLP trunk (F → hidden, `layers` ReLU layers), a ranking head (hidden → 1,
    higher = better) and a weak-label head (hidden → H, one output per weak column)."""

    def __init__(self, n_features: int, hidden: int, layers: int, n_weak: int) -> None:
        super().__init__()
        dims = [n_features] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            mods += [nn.Linear(a, b), nn.ReLU()]
        self.trunk = nn.Sequential(*mods)
        self.rank_head = nn.Linear(hidden, 1)
        self.weak_head = nn.Linear(hidden, n_weak) if n_weak > 0 else None

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.rank_head(self.trunk(x)).squeeze(-1)  # (..., ) from (..., F)


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Train / validation indices; no validation when it would hold < 3 or leave < 4."""
    n_val = round(n * fraction)
    if fraction <= 0 or n_val < 3 or n - n_val < 4:
        return np.arange(n), np.arange(0)
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@register_predictor("lambdarank")
class LambdaRankPredictor(Predictor):
    """MLP scorer trained with LambdaRank (see the module docstring).

    `predict` returns −score (lower = better) with the default lower-is-better labels and
    +score with ``higher_is_better=True``: an order, not a value on the labels' scale.

    weak (in `fit`): weak labels (N, H) of the rows of X, or a pair ``(X_weak, W)`` for a
    separate (larger) pool; either runs `pretrain` first. Calling `pretrain` yourself and
    then `fit(X, y)` does the same; later `fit` calls restart from the pretrained weights.
    """

    def __init__(
        self,
        higher_is_better: bool = False,
        hidden: int = 64,
        layers: int = 2,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        positions: str = "label",
        sigma: float = 1.0,
        max_grade: float = MAX_GRADE,
        list_size: int = 64,
        lists_per_step: int = 8,
        max_steps: int = 400,
        eval_every: int = 10,
        patience: int = 20,
        val_fraction: float = 0.2,
        val_k: int = 10,
        head_init: str = "weak",
        ridge: float = 1.0,
        pretrain_epochs: int = 40,
        pretrain_lr: float = 1e-3,
        batch_size: int = 128,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        if positions not in POSITIONS:
            raise ConfigError(f"positions={positions!r} is unknown; use one of {POSITIONS}")
        if head_init not in ("weak", "random"):
            raise ConfigError(f"head_init={head_init!r} is unknown; use 'weak' or 'random'")
        cfg = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__(**cfg)
        for k, v in cfg.items():
            setattr(self, k, v)
        self.device = torch.device(device)
        self.net: RankNet | None = None
        self.n_features: int | None = None
        self.n_weak = 0
        self._pretrained: dict[str, torch.Tensor] | None = None  # trunk + weak head after pretrain
        self.history: dict[str, list[float]] = {}

    # -- helpers -------------------------------------------------------------------------------
    def _build(self, n_features: int, n_weak: int) -> RankNet:
        # seeded init without touching the global torch RNG of the caller
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = RankNet(n_features, self.hidden, self.layers, n_weak)
        self.n_features, self.n_weak = n_features, n_weak
        return net.to(self.device)

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=self.device)

    def _goodness(self, y: np.ndarray) -> np.ndarray:
        return y if self.higher_is_better else -y

    def _optimizer(self, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=self.weight_decay)

    # -- weak-label pretraining ----------------------------------------------------------------
    def pretrain(self, X_weak: np.ndarray, W: np.ndarray) -> LambdaRankPredictor:
        """Multi-head regression of the standardized weak labels W (N, H) on the trunk."""
        x = check_X(X_weak)
        w = np.asarray(W, dtype=np.float64)
        w = w[:, None] if w.ndim == 1 else w
        if w.ndim != 2 or w.shape[0] != x.shape[0]:
            raise ConfigError(
                f"weak labels have shape {w.shape}; pass one row per row of X_weak "
                f"({x.shape[0]}) and one column per weak label"
            )
        mask = np.isfinite(w)  # (N, H) NaN = missing weak label
        if not mask.any(0).all():
            raise ConfigError("a weak-label column is entirely NaN; drop it")
        mu = np.array([w[mask[:, h], h].mean() for h in range(w.shape[1])])
        sd = np.array([w[mask[:, h], h].std() for h in range(w.shape[1])])
        z = np.where(mask, (w - mu) / np.where(sd > _TINY, sd, 1.0), 0.0)  # (N, H)
        self.net = self._build(x.shape[1], w.shape[1])
        xt, zt, mt = self._t(x), self._t(z), self._t(mask.astype(np.float32))
        opt = self._optimizer(self.pretrain_lr)
        rng = np.random.default_rng(self.seed)
        n = len(x)
        losses: list[float] = []
        self.net.train()
        for _ in tqdm(range(self.pretrain_epochs), desc="pretrain", leave=False, disable=None):
            perm = rng.permutation(n)
            tot = 0.0
            for start in range(0, n, self.batch_size):
                b = torch.as_tensor(perm[start : start + self.batch_size], device=self.device)
                pred = self.net.weak_head(self.net.trunk(xt[b]))  # (b, H)
                loss = ((pred - zt[b]) ** 2 * mt[b]).sum() / mt[b].sum().clamp_min(1.0)
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot += loss.item() * len(b)
            losses.append(tot / n)
        self.history["pretrain_mse"] = losses
        log.debug("pretrained on %d weak rows × %d heads: mse %.3f", n, w.shape[1], losses[-1])
        self._pretrained = copy.deepcopy(self.net.state_dict())
        return self

    def _probe_head(self, x: torch.Tensor, goodness: np.ndarray) -> None:
        """Ranking head := ridge fit of standardized goodness on the weak heads' outputs."""
        with torch.no_grad():
            a = self.net.weak_head(self.net.trunk(x)).double()  # (N, H)
            z = torch.as_tensor(goodness, dtype=torch.float64, device=x.device)
            z = (z - z.mean()) / z.std().clamp_min(_TINY)
            am, zm = a.mean(0), z.mean()
            ac = a - am  # centre: the bias takes the mean, unpenalised
            eye = torch.eye(a.shape[1], dtype=torch.float64, device=x.device)
            c = torch.linalg.solve(ac.T @ ac + self.ridge * eye, ac.T @ (z - zm))  # (H,)
            wh, bh = self.net.weak_head.weight.double(), self.net.weak_head.bias.double()
            self.net.rank_head.weight.copy_((c @ wh)[None].float())  # (1, hidden)
            self.net.rank_head.bias.copy_((c @ bh + zm - c @ am).reshape(1).float())

    # -- strong-label fine-tuning --------------------------------------------------------------
    def fit(self, X, y, weak=None, X_val=None, y_val=None) -> LambdaRankPredictor:
        x, t = check_Xy(X, y)
        if weak is not None:
            if isinstance(weak, tuple):
                self.pretrain(*weak)
            else:
                wk = np.asarray(weak)
                if wk.shape[0] != x.shape[0]:
                    raise ConfigError(
                        f"weak has {wk.shape[0]} rows but X has {x.shape[0]}; for a separate "
                        "pool pass weak=(X_weak, W) or call pretrain(X_weak, W) first"
                    )
                self.pretrain(x, wk)
        rng = np.random.default_rng(self.seed + 1)
        if X_val is not None:
            xv, tv = check_Xy(X_val, y_val)
            tr = np.arange(len(x))
        else:
            tr, va = _split(len(x), self.val_fraction, rng)
            xv, tv = x[va], t[va]
        pretrained = self._pretrained is not None
        if pretrained:
            if x.shape[1] != self.n_features:
                raise ConfigError(
                    f"X has {x.shape[1]} features; the weak pretraining had {self.n_features}"
                )
            self.net = self._build(self.n_features, self.n_weak)
            self.net.load_state_dict(self._pretrained)
        else:
            self.net = self._build(x.shape[1], 0)
        xt = self._t(x[tr])
        gt = self._t(self._goodness(t[tr]))  # (n,) higher = better
        if pretrained and self.head_init == "weak":
            self._probe_head(xt, self._goodness(t[tr]))
        use_val = len(tv) >= 2
        xvt = self._t(check_X(xv, x.shape[1])) if use_val else None
        opt = self._optimizer(self.lr)
        n, L = len(tr), min(self.list_size, len(tr))

        def val_ndcg() -> float:
            self.net.eval()
            with torch.no_grad():
                s = self.net.score(xvt).double().cpu().numpy()
            self.net.train()
            return ndcg_at_k(
                tv, s if self.higher_is_better else -s, self.val_k, self.higher_is_better
            )

        # step 0 competes only when it is the weak-label probe; a random init never should
        v0 = val_ndcg() if use_val else -np.inf
        best = v0 if pretrained else -np.inf
        best_state, best_step, bad = copy.deepcopy(self.net.state_dict()), 0, 0
        curve: list[float] = [v0]
        losses: list[float] = []
        self.net.train()
        for step in tqdm(
            range(1, self.max_steps + 1), desc="lambdarank", leave=False, disable=None
        ):
            # lists_per_step random lists of L distinct training items: (B, L) indices
            idx = torch.as_tensor(rng.random((self.lists_per_step, n)).argsort(1)[:, :L])
            idx = idx.to(self.device)
            s = self.net.score(xt[idx])  # (B, L)
            gains = list_gains(gt[idx], self.max_grade)  # (B, L)
            loss = lambdarank_loss(s, gains, self.positions, self.sigma)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if use_val and step % self.eval_every == 0:
                v = val_ndcg()
                curve.append(v)
                if v >= best:  # ties prefer the later (better fitted) weights
                    best, best_step, bad = v, step, 0
                    best_state = copy.deepcopy(self.net.state_dict())
                else:
                    bad += 1
                    if bad >= self.patience:
                        break
        if use_val:
            self.net.load_state_dict(best_state)
        else:
            best_step = self.max_steps
        self.net.eval()
        self.history.update(loss=losses, val_ndcg=curve, best_step=[best_step])
        log.debug("lambdarank: %d labels, best step %d, val NDCG %.3f", len(t), best_step, best)
        return self

    # -- inference -------------------------------------------------------------------------------
    def _forward(self, X, fn) -> np.ndarray:
        if self.net is None:
            raise NotFittedError("lambdarank predictor is not fitted; call fit(X, y) first")
        x = check_X(X, self.n_features)
        self.net.eval()
        outs = []
        with torch.no_grad():
            for start in range(0, len(x), 8192):  # bounded memory on big pools
                outs.append(fn(self._t(x[start : start + 8192])).double().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0,))

    def scores(self, X) -> np.ndarray:
        """Raw scores (N,), higher = better."""
        return self._forward(X, self.net.score if self.net is not None else None)

    def predict(self, X) -> np.ndarray:
        s = self.scores(X)
        return s if self.higher_is_better else -s

    def embed(self, X) -> np.ndarray:
        """Trunk features (N, hidden), e.g. for farthest-point batch selection."""
        return self._forward(X, self.net.trunk if self.net is not None else None)

    # -- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.net is None:
            raise NotFittedError("lambdarank predictor is not fitted; nothing to save")
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        if self._pretrained is not None:
            tensors.update({f"pretrained.{k}": v for k, v in self._pretrained.items()})
        return {
            "n_features": self.n_features,
            "n_weak": self.n_weak,  # 0: no weak head
            "pretrained": self._pretrained is not None,
            "tensors": tensors,
        }

    def load_state_dict(self, state: dict[str, Any]) -> LambdaRankPredictor:
        tensors = state["tensors"]
        self.net = self._build(int(state["n_features"]), int(state["n_weak"]))
        dev = self.device
        self.net.load_state_dict(
            {k[4:]: v.to(dev) for k, v in tensors.items() if k.startswith("net.")}
        )
        self.net.eval()
        if state["pretrained"]:
            self._pretrained = {
                k[11:]: v.to(dev) for k, v in tensors.items() if k.startswith("pretrained.")
            }
        return self
