"""Elastic layers: largest weights owned once, any smaller width run by slicing."""

from nas.elastic.attention import ElasticAttention
from nas.elastic.functional import ChannelSel, segments, select, slice_vector, slice_weight
from nas.elastic.modules import (
    Elastic,
    ElasticConv2d,
    ElasticGroupNorm,
    ElasticLayerNorm,
    ElasticLinear,
    configure,
)

__all__ = [
    "ChannelSel",
    "Elastic",
    "ElasticAttention",
    "ElasticConv2d",
    "ElasticGroupNorm",
    "ElasticLayerNorm",
    "ElasticLinear",
    "configure",
    "segments",
    "select",
    "slice_vector",
    "slice_weight",
]
