import json

import pytest

from nas import ExportError, load_exported
from nas.export import ARCH_FILE, PLAN_FILE


def test_not_an_export(tmp_path):
    with pytest.raises(ExportError, match="arch.json is missing"):
        load_exported(tmp_path)


def test_foreign_model_class_is_not_imported(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / PLAN_FILE).write_text("{}")
    (tmp_path / ARCH_FILE).write_text(json.dumps({"format": 1, "model_class": "os.system"}))
    with pytest.raises(ExportError, match="not a registered space's model"):
        load_exported(tmp_path)


def test_other_format_version(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / PLAN_FILE).write_text("{}")
    (tmp_path / ARCH_FILE).write_text(json.dumps({"format": 99}))
    with pytest.raises(ExportError, match="format 99"):
        load_exported(tmp_path)
