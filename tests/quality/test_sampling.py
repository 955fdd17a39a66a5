"""Sampling from a denoiser, the digits judge, the labelled grid and the scorer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

import search_spaces  # noqa: F401  (registers the shipped spaces)
from nas import SPACES
from nas.errors import ConfigError
from nas.evaluators import SupernetEvaluator
from nas.quality.base import SCHEDULERS, Conditions
from nas.quality.digits import DigitsJudge, cache_dir, cached_classifier
from nas.quality.grid import Panel, save_grid
from nas.quality.sampler import sample
from nas.quality.scorer import QualityScorer, QualitySettings, available_metrics
from nas.tasks import DigitsDenoising
from nas.tasks.base import DenoiserIO

SPACE = "test_mobile_unet"  # 1 channel, 8×8, context (3, 8)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return SPACES.get(SPACE).supernet().eval()


@pytest.fixture(scope="module")
def task(net):
    return DigitsDenoising.for_model(net, val_images=16)


@pytest.fixture(scope="module")
def judge(task):
    train = task.split("train")
    return DigitsJudge(train["x0"], train["label"], task.reference_images())


# ------------------------------------------------------------------------------ sampler
def test_sampler_equals_diffusers_ddim_pipeline(net, task):
    from diffusers import DDIMPipeline, DDIMScheduler

    model = net.extract(net.space.max()).eval()
    cond = task.conditions(2)
    ctx = cond.context[0]  # class 0 for both images: the pipeline binds one context

    class Bound(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        config = model.config
        dtype = torch.float32
        device = torch.device("cpu")

        def forward(self, sample, timestep, return_dict=True):
            return self.inner(
                sample, timestep, ctx.expand(sample.shape[0], -1, -1), return_dict=return_dict
            )

    sched = DDIMScheduler.from_config(task.objective.scheduler.config)
    pipe = DDIMPipeline(unet=Bound(), scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    want = pipe(
        batch_size=2,
        generator=torch.Generator().manual_seed(5),
        num_inference_steps=4,
        output_type="np",
    ).images  # (2, 8, 8, 1) in [0, 1]
    same = Conditions(n=2, context=ctx.expand(2, -1, -1))
    got = sample(model, same, task.objective, task.io, steps=4, scheduler="ddim", seed=5)
    got = (got / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert want.std() > 0.01
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_sampler_does_not_depend_on_chunking_and_every_scheduler_runs(net, task):
    # the max subnet is float: min/max activation observers of a quantized one see the batch
    model = net.extract(net.space.max()).eval()
    cond = task.conditions(5)
    one = sample(model, cond, task.objective, task.io, steps=3, seed=1, batch_size=5)
    chunked = sample(model, cond, task.objective, task.io, steps=3, seed=1, batch_size=2)
    torch.testing.assert_close(one, chunked, rtol=0, atol=1e-5)
    other_seed = sample(model, cond, task.objective, task.io, steps=3, seed=2, batch_size=5)
    assert not torch.allclose(one, other_seed)
    outs = {}
    for name in SCHEDULERS:
        outs[name] = sample(model, cond, task.objective, task.io, steps=3, scheduler=name, seed=1)
        assert outs[name].shape == (5, 1, 8, 8) and torch.isfinite(outs[name]).all()
    assert not torch.allclose(outs["ddim"], outs["ddpm"])  # ancestral noise changes it


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "at least 1 step"),
        ({"scheduler": "heun2"}, "ddim, ddpm"),
        ({"batch_size": 0}, "positive"),
    ],
)
def test_sampler_refuses_bad_settings(net, task, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        sample(net.extract(net.space.min()), task.conditions(2), task.objective, task.io, **kwargs)


# -------------------------------------------------------------------------- digits judge
def test_digits_conditions_ask_for_every_class_in_turn(task):
    cond = task.conditions(23)
    assert cond.label.tolist() == [i % 10 for i in range(23)]
    torch.testing.assert_close(cond.context, task.class_contexts[cond.label])


def test_digits_judge_reads_real_digits_and_not_noise(task, judge):
    ref = task.reference_images()
    labels = task._data["label"][task.heldout_index]
    assert judge.accuracy(ref, labels) >= 0.95  # the held-out split: never trained on
    real = judge.score(ref, Conditions(n=len(labels), label=labels))
    assert real["cond_accuracy"] >= 0.95 and abs(real["fid"]) < 1e-3
    noise = torch.randn(ref.shape, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    bad = judge.score(noise, Conditions(n=len(labels), label=labels))
    assert bad["cond_accuracy"] < 0.3 and bad["fid"] > 50
    wrong = judge.score(ref, Conditions(n=len(labels), label=(labels + 1) % 10))
    assert wrong["cond_accuracy"] < 0.1  # it checks what was asked, not only "a digit"
    noisy = (ref + 0.3 * noise).clamp(-1, 1)  # still digits, visibly worse
    mid = judge.score(noisy, Conditions(n=len(labels), label=labels))["fid"]
    assert 0 < mid < bad["fid"]


def test_digits_fid_is_the_frechet_distance_of_the_classifier_features(task, judge):
    ref = task.reference_images()
    g = torch.Generator().manual_seed(1)
    fake = (ref[:60] + 0.3 * torch.randn(ref[:60].shape, generator=g)).clamp(-1, 1)
    got = judge.score(fake, Conditions(n=60, label=torch.zeros(60, dtype=torch.long)))["fid"]
    with torch.no_grad():
        fr = judge.classifier.features(ref).double().numpy()
        ff = judge.classifier.features(fake).double().numpy()
    mu_r, mu_f = fr.mean(0), ff.mean(0)
    s_r, s_f = np.cov(fr, rowvar=False), np.cov(ff, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_r @ s_f).real
    want = float(((mu_r - mu_f) ** 2).sum() + np.trace(s_r + s_f - 2 * covmean))
    assert got == pytest.approx(want, rel=1e-3)


def test_digits_judge_is_cached_and_a_damaged_cache_retrains(task, caplog):
    train = task.split("train")
    files = sorted(cache_dir().glob("digits_classifier-*.safetensors"))
    assert files, "the module fixture's judge was cached"
    first = cached_classifier(train["x0"], train["label"])
    again = cached_classifier(train["x0"], train["label"])
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    other = cached_classifier(train["x0"][:200], train["label"][:200])  # another split
    assert len(list(cache_dir().glob("digits_classifier-*.safetensors"))) == len(files) + 1
    assert not torch.equal(other.head.weight, first.head.weight)
    for f in cache_dir().glob("digits_classifier-*.safetensors"):
        f.write_bytes(b"not safetensors")
    threads = torch.get_num_threads()
    torch.set_num_threads(3 - min(threads, 2))  # another count than the fixture's: 1 <-> 2
    try:
        with caplog.at_level("WARNING"):
            retrained = cached_classifier(train["x0"], train["label"])
    finally:
        torch.set_num_threads(threads)
    assert "unreadable" in caplog.text
    torch.testing.assert_close(retrained.head.weight, first.head.weight)  # deterministic


def test_digits_judge_refuses_images_without_classes(task, judge):
    with pytest.raises(ConfigError, match="class each image"):
        judge.score(task.reference_images()[:4], Conditions(n=4))
    with pytest.raises(ConfigError, match="not \\['clip_score'\\]"):
        DigitsJudge(
            task.reference_images(),
            torch.zeros(3),
            task.reference_images(),
            metrics=("clip_score",),
        )


# ------------------------------------------------------------------------------- scorer
def test_scorer_judges_what_it_generates(net, task):
    settings = QualitySettings(samples=20, steps=2, seed=3)
    scorer = QualityScorer(task, ["cond_accuracy", "fid"], settings)
    model = net.extract(net.space.min())
    got = scorer.score(model)
    assert set(got) == {"cond_accuracy", "fid"} and all(np.isfinite(list(got.values())))
    assert scorer.score(model) == got  # the same images every time: seeded, deterministic
    assert QualityScorer(task, [], settings).score(model) == {}
    assert available_metrics(task, None) == ["cond_accuracy", "fid"]


def test_supernet_evaluator_records_quality_metrics(net, task):
    scorer = QualityScorer(task, ["cond_accuracy"], QualitySettings(samples=10, steps=2))
    trial = SupernetEvaluator(net, task, quality=scorer).evaluate(net.space.min())
    assert trial.state == "completed", trial.error
    assert set(trial.metrics) == {"val_loss", "cond_accuracy"}
    assert 0.0 <= trial.metrics["cond_accuracy"] <= 1.0


# --------------------------------------------------------------------------------- grid
def test_grid_has_a_row_per_class_and_panels_side_by_side(tmp_path: Path):
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand((30, 1, 8, 8), generator=g) * 2 - 1
    labels = torch.arange(30) % 10
    one = save_grid([Panel("a", imgs, labels)], tmp_path / "one.png")
    two = save_grid(
        [Panel("a", imgs, labels), Panel("b", imgs[:12], labels[:12])], tmp_path / "sub" / "two.png"
    )
    free = save_grid(
        [Panel("rgb", torch.rand((7, 3, 16, 16), generator=g) * 2 - 1)], tmp_path / "free.png"
    )
    w1, h1 = Image.open(one).size
    w2, h2 = Image.open(two).size
    assert Image.open(free).mode in ("RGBA", "RGB")
    assert w2 > 1.5 * w1 and h1 > 0 and h2 > 0
    with pytest.raises(ConfigError, match="labels for 30 images"):
        save_grid([Panel("bad", imgs, labels[:5])], tmp_path / "bad.png")
    with pytest.raises(ConfigError, match="no panels"):
        save_grid([], tmp_path / "none.png")


def test_digits_io_of_other_sizes_is_judged_at_8x8():
    task = DigitsDenoising(DenoiserIO(3, 16, None, None), val_images=8)
    assert task.reference_images().shape[1:] == (3, 16, 16)
    assert task.conditions(4).context is None
