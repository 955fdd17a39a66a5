"""`import nas` stays light: no Ray, no LiteRT / ExecuTorch / ONNX toolchains."""

import subprocess
import sys

HEAVY = (
    "ray",
    "litert_torch",
    "ai_edge_litert",
    "executorch",
    "onnxruntime",
    "optuna",
    "diffusers",
)


def test_import_nas_is_lean():
    code = f"import sys, nas; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import nas pulled in: {out.stdout.strip()}"
