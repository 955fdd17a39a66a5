"""The residual model recovers known coefficients, round-trips, refuses old files, and
improves held-out predictions."""

import json

import numpy as np
import pytest

from latency_tables.calibration import FORMAT, Calibration, loo_calibrated
from latency_tables.validate import metrics
from nas import ConfigError

NAMES = ["weight_mb", "act_mb", "blocks"]


def synthetic(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    feats = np.column_stack(
        [rng.uniform(1, 12, n), rng.uniform(0.5, 4, n), rng.integers(20, 60, n).astype(float)]
    )
    pred = rng.uniform(5, 50, n)
    measured = 1.1 * pred + feats @ np.array([0.08, 0.3, -0.01]) + 0.4
    return pred, feats, measured


def test_residual_model_recovers_known_coefficients():
    pred, feats, measured = synthetic()
    cal = Calibration.fit(pred, feats, measured, NAMES, ridge=0.0)
    assert cal.scale == pytest.approx(1.1, rel=1e-6)
    assert [cal.weights[n] for n in NAMES] == pytest.approx([0.08, 0.3, -0.01], rel=1e-6)
    assert cal.intercept == pytest.approx(0.4, rel=1e-6)
    np.testing.assert_allclose(cal.apply(pred, feats), measured, rtol=1e-9)
    # a feature that never varies is absorbed by the intercept
    const = feats.copy()
    const[:, 2] = 30.0
    flat = Calibration.fit(pred, const, 1.1 * pred + 0.3 * const[:, 1] + 1.0, NAMES, ridge=0.0)
    assert flat.weights["blocks"] == 0.0 and flat.weights["act_mb"] == pytest.approx(0.3)


def test_format_round_trips_and_old_files_teach_the_refit(tmp_path):
    pred, feats, measured = synthetic()
    cal = Calibration.fit(pred, feats, measured, NAMES, info={"archs": "random"})
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal.to_json()))
    back = Calibration.load(path)
    assert back == cal and back.to_json()["format"] == FORMAT
    assert back.to_json()["units"]["weight_mb"] == "ms per MB"
    old = {"format": "mqnas-latency-calibration/1", "scale": 1.0, "per_block": {}, "intercept": 0}
    path.write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="nas latency validate --space") as e:
        Calibration.load(path)
    assert str(path) in str(e.value)
    with pytest.raises(ConfigError, match="not an mqnas latency calibration"):
        Calibration.from_json({"format": "x"})
    with pytest.raises(ConfigError, match="unknown residual feature"):
        Calibration(1.0, {"n_resnet": 0.1}, 0.0, 3)


def test_leave_one_out_improves_a_noisy_table_sum():
    pred, feats, measured = synthetic(seed=1)
    noisy = measured * np.random.default_rng(2).normal(1, 0.02, len(measured))
    loo = loo_calibrated(pred, feats, noisy, NAMES)
    raw, cal = metrics(pred, noisy), metrics(loo, noisy)
    assert cal["mape_pct"] < raw["mape_pct"] and cal["within_10pct"] >= 0.9
    assert raw["kendall_tau"] > 0.5


def test_a_negative_overhead_is_refitted_at_zero_when_held_nonnegative():
    pred, feats, _ = synthetic(seed=3)
    # the truth has a negative intercept: free, the fit finds it; held ≥ 0, it is 0 and
    # the other terms absorb what they can
    measured = 1.2 * pred + feats @ np.array([0.05, 0.2, 0.01]) - 0.8
    free = Calibration.fit(pred, feats, measured, NAMES, ridge=0.0)
    held = Calibration.fit(pred, feats, measured, NAMES, ridge=0.0, nonneg_intercept=True)
    assert free.intercept == pytest.approx(-0.8, rel=1e-6)
    assert held.intercept == 0.0 and held.scale > 0
    # with the intercept at 0, the refit is the least-squares fit without one
    x = np.column_stack([pred, feats]) / measured[:, None]
    w = np.linalg.lstsq(x, np.ones(len(measured)), rcond=None)[0]
    assert [held.scale, *held.weights.values()] == pytest.approx(list(w), rel=1e-6)
    # a positive overhead is left as it is
    up = measured + 1.6
    a = Calibration.fit(pred, feats, up, NAMES, ridge=0.0)
    b = Calibration.fit(pred, feats, up, NAMES, ridge=0.0, nonneg_intercept=True)
    assert a == b and a.intercept == pytest.approx(0.8, rel=1e-6)
    loo = loo_calibrated(pred, feats, measured, NAMES, nonneg_intercept=True)
    assert np.all(np.isfinite(loo))
