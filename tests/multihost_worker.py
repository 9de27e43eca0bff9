"""One process of the two-process test in test_multihost.py: 4 CPU devices of a global 8.

Usage: python tests/multihost_worker.py PROCESS_ID PORT OUT.npz
"""

import os
import sys

# 4 devices; XLA's concurrency-optimised CPU scheduler deadlocks on batched LAPACK calls run side
# by side (see conftest.py).
os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=4"
                           " --xla_cpu_enable_concurrency_optimized_scheduler=false")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from cvxjax import sharding  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU all-reduce across processes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from multihost_problems import FITS, fit  # noqa: E402


def main(process_id: int, port: int, out: str):
  jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
  mesh = sharding.make_mesh(examples=4, model=2)  # the examples axis spans both processes
  results = {}
  for name in FITS:
    objective, weights = fit(name, mesh=mesh)
    results[f"{name}/objective"] = float(objective)
    results[f"{name}/weights"] = multihost_utils.process_allgather(weights, tiled=True)
  if process_id == 0:
    np.savez(out, **results)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
