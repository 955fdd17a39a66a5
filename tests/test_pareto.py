"""Pareto fronts, exact hypervolume (against brute force) and the plots."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau

import nas
from nas.errors import ConfigError
from nas.pareto import (
    hypervolume,
    hypervolume_curve,
    nondominated_mask,
    pareto_front,
    plot_hypervolume,
    plot_pareto,
    plot_pred_vs_true,
)


def _brute_front(y: np.ndarray) -> np.ndarray:
    """O(n²) reference: i is on the front iff no j is ≤ everywhere and < somewhere."""
    n = len(y)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if np.all(y[j] <= y[i]) and np.any(y[j] < y[i]):
                keep[i] = False
                break
    return keep


def _grid_hv(y: np.ndarray, ref: np.ndarray) -> float:
    """Exact HV of integer points: count the unit cells whose centre some point dominates."""
    lo = y.min(0)
    axes = [np.arange(lo[d], ref[d]) + 0.5 for d in range(y.shape[1])]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, y.shape[1])
    covered = np.zeros(len(centres), dtype=bool)
    for p in y:
        covered |= (centres > p).all(1) & (centres < ref).all(1)
    return float(covered.sum())


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_front_matches_brute_force_with_ties(m, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, size=(60, m)).astype(float)  # many ties and duplicates
    assert (nondominated_mask(y, block=7) == _brute_front(y)).all()


def test_pareto_front_of_a_frame_handles_directions_states_and_nan():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "id": [f"t{i}" for i in range(80)],
            "loss": rng.random(80),
            "acc": rng.random(80),
            "state": ["completed"] * 70 + ["failed"] * 10,
        }
    )
    df.loc[5, "loss"] = np.nan
    front = pareto_front(df, {"loss": "min", "acc": "max"})
    ok = (df["state"] == "completed") & df["loss"].notna()
    y = np.c_[df["loss"], -df["acc"]][ok.to_numpy()]
    expect = set(df["id"][ok][_brute_front(y)])
    assert set(front["id"]) == expect
    assert front["loss"].is_monotonic_increasing  # sorted by the first objective
    # a list of names means every objective is minimized
    assert set(pareto_front(df, ["loss", "acc"])["id"]) != expect
    assert nas.pareto_front is pareto_front


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("seed", range(3))
def test_hypervolume_is_exact_against_grid_counting(m, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 12, size=(25, m)).astype(float)
    ref = np.full(m, 12.0)
    assert hypervolume(y, [f"f{i}" for i in range(m)], ref) == pytest.approx(_grid_hv(y, ref))


@pytest.mark.parametrize("m", [2, 3])
def test_hypervolume_against_monte_carlo_on_a_random_front(m):
    rng = np.random.default_rng(m)
    # a curved front: points on the positive unit sphere, plus dominated points
    u = np.abs(rng.normal(size=(30, m)))
    y = np.vstack([u / np.linalg.norm(u, axis=1, keepdims=True), rng.random((30, m)) + 0.6])
    ref = np.full(m, 1.5)
    hv = hypervolume(y, [f"f{i}" for i in range(m)], ref)
    n = 400_000
    pts = rng.random((n, m)) * ref
    dominated = np.zeros(n, dtype=bool)
    for p in y:
        dominated |= (pts >= p).all(1)
    est = dominated.mean() * np.prod(ref)
    se = np.sqrt(dominated.mean() * (1 - dominated.mean()) / n) * np.prod(ref)
    assert abs(hv - est) < 4 * se


def test_hypervolume_of_max_objectives_mirrors_min():
    rng = np.random.default_rng(1)
    y = rng.random((40, 2))
    df = pd.DataFrame({"lat": y[:, 0], "acc": -y[:, 1]})  # acc = −y1, maximized
    a = hypervolume(y, ["lat", "acc"], [1.1, 1.1])
    b = hypervolume(df, {"lat": "min", "acc": "max"}, [1.1, -1.1])
    assert a == pytest.approx(b) and a > 0
    assert nas.hypervolume is hypervolume
    # points not strictly better than the reference add nothing
    assert hypervolume(np.array([[2.0, 0.0]]), ["a", "b"], [1.0, 1.0]) == 0.0
    assert hypervolume(np.array([[0.5, 0.5]]), ["a", "b"], [1.0, 1.0]) == pytest.approx(0.25)


def test_hypervolume_refuses_bad_input():
    y = np.zeros((3, 4))
    with pytest.raises(ConfigError, match="1–3 objectives"):
        hypervolume(y, ["a", "b", "c", "d"], [1, 1, 1, 1])
    with pytest.raises(ConfigError, match="one per objective"):
        hypervolume(y[:, :2], ["a", "b"], [1.0])
    with pytest.raises(ConfigError, match="not in the trials"):
        hypervolume(pd.DataFrame({"a": [1.0]}), ["a", "zz"], [2, 2])


def test_hypervolume_curve_follows_created_order_and_skips_failures():
    rng = np.random.default_rng(2)
    n = 50
    df = pd.DataFrame(
        {
            "f1": rng.random(n),
            "f2": rng.random(n),
            "created": rng.permutation(n).astype(float),
            "state": np.where(rng.random(n) < 0.2, "failed", "completed"),
        }
    )
    curve = hypervolume_curve(df, ["f1", "f2"], [1.0, 1.0])
    assert curve.shape == (n,)
    assert (np.diff(curve) >= -1e-12).all()
    assert curve[-1] == pytest.approx(hypervolume(df, ["f1", "f2"], [1.0, 1.0]))
    ordered = df.sort_values("created").reset_index(drop=True)
    for k in [1, 7, 23]:
        assert curve[k - 1] == pytest.approx(hypervolume(ordered.head(k), ["f1", "f2"], [1, 1]))
    failed = (ordered["state"] == "failed").to_numpy()
    assert (curve[1:][failed[1:]] == curve[:-1][failed[1:]]).all()


def test_plots_write_labelled_pngs(tmp_path):
    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {
            "id": [f"t{i}" for i in range(40)],
            "val_loss": rng.random(40),
            "latency_ms": rng.random(40) * 10,
            "state": "completed",
        }
    )
    df["pred"] = df["val_loss"] + rng.normal(scale=0.1, size=40)
    fig = plot_pareto(
        df, {"val_loss": "min", "latency_ms": "min"}, chosen="t3", path=tmp_path / "p" / "a.png"
    )
    ax = fig.axes[0]
    assert "ms" in ax.get_ylabel() and "loss" in ax.get_xlabel()
    assert (tmp_path / "p" / "a.png").stat().st_size > 1000

    curves = {"random": [rng.random(30).cumsum() for _ in range(3)], "tpe": rng.random(25).cumsum()}
    fig = plot_hypervolume(curves, path=tmp_path / "hv.png")
    assert "evaluations" in fig.axes[0].get_xlabel()
    assert (tmp_path / "hv.png").stat().st_size > 1000

    fig = plot_pred_vs_true(df, "pred", "val_loss", path=tmp_path / "pvt.png")
    tau = kendalltau(df["val_loss"], df["pred"]).statistic
    assert re.search(f"τ = {tau:.3f}", fig.axes[0].get_title())
    assert (tmp_path / "pvt.png").stat().st_size > 1000

    with pytest.raises(ConfigError, match="two objectives"):
        plot_pareto(df, ["val_loss"])
    with pytest.raises(ConfigError, match="'t99' is not among"):
        plot_pareto(df, ["val_loss", "latency_ms"], chosen="t99")


def test_exact_hv_of_a_small_3d_case_by_hand():
    # two boxes of volume 1·2·2 = 4 and 2·1·1 = 2 overlapping in 1·1·1 → 5
    y = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    assert hypervolume(y, ["a", "b", "c"], [2, 2, 2]) == pytest.approx(5.0)
    # all permutations of the objectives give the same volume
    for perm in itertools.permutations(range(3)):
        assert hypervolume(y[:, perm], ["a", "b", "c"], [2, 2, 2]) == pytest.approx(5.0)
