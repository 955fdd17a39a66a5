"""Latency tables: block keys of a space, measurement backends, the table format, the
cost model that predicts an architecture's latency from them, and calibration
against end-to-end runs."""
