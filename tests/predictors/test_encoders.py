"""SpaceEncoder: derived from the space, vectorized, cost features fitted once."""

from __future__ import annotations

import json

import numpy as np
import pytest
import ranking_problem as rp

import search_spaces  # noqa: F401  (registers test_mobile_unet)
from latency_tables.cost import CostModel
from nas import get_space
from nas.errors import ConfigError, InvalidSampleError
from predictors import SpaceEncoder


@pytest.fixture(scope="module")
def unet():
    space = get_space("test_mobile_unet").space()
    return space, CostModel(space, None)


def test_onehot_and_ordinal_follow_the_space():
    sp = rp.space()
    samples = sp.sample_many(50, rng=0)
    oh = SpaceEncoder(sp, kind="onehot")
    x = oh.transform(samples)
    assert x.dtype == np.float32
    assert x.shape == (50, sum(len(c) for _, c in sp.items())) == (50, oh.n_features)
    np.testing.assert_array_equal(x, sp.encode(samples, kind="onehot"))
    assert oh.feature_names[:4] == [f"stage.0.width={w}" for w in rp.WIDTHS]
    assert oh.feature_names[7] == 'stage.0.op="skip"'  # after 4 widths, 3 depths
    # each label contributes exactly one hot column
    assert (x.sum(1) == len(sp)).all()
    od = SpaceEncoder(sp, kind="ordinal")
    xo = od.transform(samples)
    assert xo.shape == (50, len(sp)) and od.feature_names == sp.labels
    assert xo.min() >= 0.0 and xo.max() <= 1.0
    np.testing.assert_array_equal(od.transform([sp.max()]), np.ones((1, len(sp))))
    with pytest.raises(InvalidSampleError):
        oh.transform([{**sp.default(), "stage.0.width": 17}])
    with pytest.raises(ConfigError, match="kind"):
        SpaceEncoder(sp, kind="binary")


def test_cost_features_on_test_mobile_unet_without_a_table(unet):
    space, cost = unet
    enc = SpaceEncoder(space, kind="onehot", cost_model=cost)  # no table → params, macs
    assert enc.cost_features == ("params", "macs")
    assert enc.feature_names[-2:] == ["cost:params", "cost:macs"]
    ref = space.sample_many(200, rng=0)
    with pytest.raises(ConfigError, match="not fitted"):
        enc.transform(ref)
    x = enc.fit_transform(ref)
    n_space = sum(len(c) for _, c in space.items())
    assert x.shape == (200, n_space + 2) and x.dtype == np.float32
    z = x[:, -2:]
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)  # standardized on the fit set
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-4)
    raw = cost.costs(ref, ("params", "macs"))
    # log-scaled: the column is an affine map of log(1 + params)
    lp = np.log1p(raw["params"])
    assert np.corrcoef(lp, z[:, 0])[0, 1] == pytest.approx(1.0, abs=1e-6)
    # new samples use the stored statistics (no refit)
    new = space.sample_many(30, rng=1)
    xn = enc.transform(new)
    mu, sd = np.log1p(raw["params"]).mean(), np.log1p(raw["params"]).std()
    want = (np.log1p(cost.costs(new, ("params",))["params"]) - mu) / sd
    np.testing.assert_allclose(xn[:, enc.column("params")], want, rtol=1e-5, atol=1e-5)
    # state_dict is JSON and reproduces the transform in a fresh encoder
    state = json.loads(json.dumps(enc.state_dict()))
    enc2 = SpaceEncoder(space, cost_model=cost).load_state_dict(state)
    np.testing.assert_array_equal(enc2.transform(new), xn)


def test_cost_feature_errors_teach(unet):
    space, cost = unet
    with pytest.raises(ConfigError, match="latency table"):
        SpaceEncoder(space, cost_model=cost, cost_features=("latency_ms", "params"))
    with pytest.raises(ConfigError, match="need a cost model"):
        SpaceEncoder(space, cost_features=("params",))
    with pytest.raises(ConfigError, match="labels"):
        SpaceEncoder(rp.space(), cost_model=cost)
    enc = SpaceEncoder(space, cost_model=cost, cost_features=("params",))
    with pytest.raises(ConfigError, match="no feature"):
        enc.column("macs")
    other = SpaceEncoder(rp.space())
    with pytest.raises(ConfigError, match="labels differ"):
        other.load_state_dict(enc.fit(space.sample_many(5, rng=0)).state_dict())
