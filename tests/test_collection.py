"""The suite collects on a machine that lacks the optional packages (the GPU machine runs
`pytest -m gpu` without the dev/eval/fused extras, and without some core ones)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

OPTIONAL = ["zstandard", "datasets", "pyarrow", "scipy", "sklearn", "hypothesis", "lm_eval", "triton",
            "liger_kernel", "cut_cross_entropy", "tensorboard", "matplotlib"]


def test_collects_without_optional_packages(tmp_path):
    # a plugin that makes the packages unimportable: `import x` raises, importlib.util.find_spec is None
    (tmp_path / "block_optional.py").write_text(
        f"import sys\nfor name in {OPTIONAL!r}:\n    sys.modules[name] = None\n")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "src"), str(tmp_path),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "gpu",
                           "-p", "block_optional", "-p", "no:hypothesispytest", "-p", "no:cacheprovider",
                           str(root / "tests")], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 5), proc.stdout[-3000:] + proc.stderr[-2000:]  # 5: nothing selected
    assert "error" not in proc.stdout.lower().splitlines()[-1], proc.stdout[-3000:]
