"""The package's import graph: the contracts in pyproject.toml hold, and `import cvxjax` is light.

Both run in a fresh interpreter on this checkout, so that the test process's own imports (Flax,
orbax, the XLA flags of conftest.py) can neither mask nor cause a failure.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": ROOT}
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                        text=True, check=False)


def test_import_linter_contracts_are_kept():
  code = ("import sys\nfrom importlinter.cli import lint_imports\n"
          "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
  result = _python(code)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "4 kept, 0 broken" in result.stdout, result.stdout


def test_import_cvxjax_loads_no_flax_orbax_or_tfds_and_leaves_the_environment_alone():
  # jax sets a few variables of its own when imported; cvxjax must add none.
  code = """
import json, os, sys
import jax
before = dict(os.environ)
import cvxjax
after = dict(os.environ)
heavy = ("flax", "flax.linen", "orbax.checkpoint", "tensorflow", "tensorflow_datasets",
         "matplotlib")
print(json.dumps({
    "file": cvxjax.__file__,
    "loaded": sorted(m for m in heavy if m in sys.modules),
    "changed": sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)),
}))
"""
  result = _python(code)
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["file"].startswith(ROOT), report["file"]
  assert report["loaded"] == [], report["loaded"]
  assert report["changed"] == [], report["changed"]
