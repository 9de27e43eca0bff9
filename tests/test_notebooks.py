"""The Colab notebooks, executed headlessly on their smallest settings (a real Jupyter kernel)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # a real kernel runs each notebook end to end

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(name: str, parameters: str, cwd: str) -> nbformat.NotebookNode:
  """Executes colab/<name> with its "parameters" cell replaced; raises on any failing cell."""
  notebook = nbformat.read(os.path.join(ROOT, "colab", name), as_version=4)
  cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(cells) == 1, "a notebook has exactly one cell tagged 'parameters'"
  cells[0].source = parameters
  # The kernel imports experiments/ from the checkout and the package from the environment.
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
             OPENBLAS_NUM_THREADS="1")
  env.pop("COLAB_RELEASE_TAG", None)
  client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": cwd}})
  client.km_kwargs = {"env": env}
  # Startup: the kernel starts in cwd with the same environment as the tests.
  return client.execute(env=env)


def _outputs(notebook, output_type):
  return [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
          if o.output_type == output_type]


def test_quickstart_runs_and_shows_the_plot(tmp_path):
  parameters = 'REPO_URL = ""\nN_TRAIN = 60\nMAX_STEPS = 60\nNUM_PATTERNS = 20'
  notebook = _run("quickstart.ipynb", parameters, str(tmp_path))
  assert os.path.getsize(tmp_path / "robust_accuracy.png") > 0
  assert any("image/png" in o.get("data", {}) for o in _outputs(notebook, "display_data"))


def test_cifar_notebook_runs_the_smoke_config(tmp_path):
  workdir = tmp_path / "run"
  notebook = _run("cifar_convex_head.ipynb",
                  f'REPO_URL = ""\nVARIANT = "smoke"\nWORKDIR = "{workdir}"\nDATA_DIR = ""',
                  str(tmp_path))
  assert os.path.getsize(workdir / "accuracy_vs_eps.png") > 0
  assert any("image/png" in o.get("data", {}) for o in _outputs(notebook, "display_data"))
