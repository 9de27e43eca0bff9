"""Test configuration: float64 (oracle comparisons at 1e-4 and feasibility at 1e-6 need it),
8 CPU devices for the sharding tests, and XLA's CPU scheduler without the concurrency
optimisation (both set before jax starts its backend).

Each module's compiled executables are dropped when it ends: every XLA CPU executable holds a
few memory mappings, and a whole suite's worth of them passed the kernel's limit
(vm.max_map_count, 65530), which made XLA's compiler crash with a segmentation fault.
"""

import gc
import os

# XLA's thread pool and OpenBLAS's threads contend on small machines (see solvers/loop.py).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8").strip()
# XLA's concurrency-optimised CPU scheduler deadlocks on programs that run batched LAPACK calls
# side by side, as the ReLU barrier's Newton step does; set before jax starts its backend.
if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_executables():
  yield
  jax.clear_caches()
  gc.collect()
