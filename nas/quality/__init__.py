"""Generation quality: sampling images from a denoiser, and the metrics that judge them."""

from nas.quality.base import QUALITY_METRICS, Conditions, Judge, QualityMetric

__all__ = ["QUALITY_METRICS", "Conditions", "Judge", "QualityMetric"]
