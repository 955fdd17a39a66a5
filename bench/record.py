"""How a bench publishes its figures: JSON on stdout, and the same JSON kept as a record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def publish(
    doc: dict[str, Any], out: str | Path | None, indent: int = 1, quiet: tuple[str, ...] = ()
) -> None:
    """Write `doc` as JSON to `out` when given (parents created) and print it, without the
    `quiet` keys (bulky per-run records that only the file keeps)."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(doc, indent=indent) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k not in quiet}, indent=indent))
