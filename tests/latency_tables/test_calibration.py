"""The calibration recovers a known residual model and improves held-out predictions."""

import numpy as np
import pytest

from latency_tables.calibration import Calibration
from latency_tables.validate import loo_calibrated, metrics
from nas import ConfigError


def test_calibration_recovers_scale_and_per_block_overhead():
    rng = np.random.default_rng(0)
    kinds = ["resnet", "transformer", "conv_in"]
    counts = np.column_stack([rng.integers(2, 12, 40), rng.integers(0, 8, 40), np.ones(40)])
    pred = rng.uniform(5, 50, 40)
    measured = 1.3 * pred + 0.4 * counts[:, 0] + 0.2 * counts[:, 1] + 1.0
    cal = Calibration.fit(pred, counts, measured, kinds, ridge=0.0)
    assert cal.scale == pytest.approx(1.3, rel=1e-6)
    assert cal.per_block["resnet"] == pytest.approx(0.4, rel=1e-6)
    assert cal.per_block["conv_in"] == 0.0  # constant count: absorbed by the intercept
    np.testing.assert_allclose(cal.apply(pred, counts), measured, rtol=1e-6)
    assert Calibration.from_json(cal.to_json()) == cal
    with pytest.raises(ConfigError, match="not an mqnas latency calibration"):
        Calibration.from_json({"format": "x"})
    noisy = measured * rng.normal(1, 0.02, 40)
    raw, loo = metrics(pred, noisy), metrics(loo_calibrated(pred, counts, noisy, kinds), noisy)
    assert loo["mape_pct"] < raw["mape_pct"] and loo["within_10pct"] >= 0.9
    assert raw["kendall_tau"] > 0.5
