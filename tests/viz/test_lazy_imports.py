"""Importing qkv.viz or qkv.evaluation loads neither matplotlib nor sacrebleu (they are imported lazily)."""

import subprocess
import sys


def test_optional_dependencies_are_imported_lazily():
    code = (
        "import sys, qkv.viz, qkv.evaluation\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'matplotlib', 'sacrebleu'})\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
