"""The application layer: what `nas` runs, and the only code that imports every package.

The core (`nas/` outside this package) defines spaces, samples, quantization, policies,
strategies, tasks and training, and never imports `search_spaces`, `latency_tables` or
`predictors`; those register into it. This package wires them together: the YAML is
parsed (`nas.config`), built into objects (`nas.app.pipeline`), searched, reported
(`nas.app.report`), and the CLI (`nas.app.cli`) renders the outcome.
"""
