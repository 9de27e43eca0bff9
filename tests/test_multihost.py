"""Two processes (4 CPU devices each, `jax.distributed.initialize`, gloo all-reduces) train on
one 8-device mesh whose examples axis spans both: the fits equal the single-process ones."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from multihost_problems import FITS, fit

pytestmark = pytest.mark.slow  # end to end: minutes on 2 cores

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("multihost") / "results.npz")
  port = str(_free_port())
  # The two workers compile the same programs at once: neither reads the other's half-written
  # cache entries (the conftest's compilation cache).
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
  worker = os.path.join(_ROOT, "tests", "multihost_worker.py")
  procs = [subprocess.Popen([sys.executable, worker, str(i), port, out], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  logs = [p.communicate(timeout=900)[0] for p in procs]
  for p, log in zip(procs, logs, strict=True):
    assert p.returncode == 0, log[-3000:]
  return np.load(out)


@pytest.mark.parametrize("name", FITS)
def test_two_process_fit_equals_the_single_process_fit(two_process_results, name):
  objective, weights = fit(name)
  assert (abs(float(two_process_results[f"{name}/objective"]) - float(objective))
          <= 1e-5 * abs(float(objective)))
  np.testing.assert_allclose(two_process_results[f"{name}/weights"], np.asarray(weights),
                             atol=1e-5)
