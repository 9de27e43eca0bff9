"""Test configuration: float64 (oracle comparisons at 1e-4 and feasibility at 1e-6 need it),
8 CPU devices for the sharding tests, XLA's CPU scheduler without the concurrency
optimisation, LLVM without its optimisation passes (all set before jax starts its backend), and
a persistent compilation cache shared by the test processes.

Each module's compiled executables are dropped when it ends: every XLA CPU executable holds a
few memory mappings, and a whole suite's worth of them passed the kernel's limit
(vm.max_map_count, 65530), which made XLA's compiler crash with a segmentation fault.
"""

import gc
import os
import shutil
import tempfile

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

# The suite compiles far more than it computes, and LLVM's optimisation passes took most of the
# compile time: without them (the same arithmetic, rounded in another order) the cifar smoke run
# takes 77 s instead of 127 s.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

# Each module drops its executables (below), and the notebook kernels and worker processes start
# cold: identical programs compiled again are read back from disk instead (one folder a run, made
# by the process that starts pytest; pytest-xdist's workers inherit it with the environment).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cvxjax-test-compilations-")
  os.environ["CVXJAX_TEST_CACHE_OWNER"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_executables():
  yield
  jax.clear_caches()
  gc.collect()


def pytest_collection_modifyitems(config, items):
  """Modules with slow tests first, then the others by number of tests, most first.

  pytest-xdist hands out one module at a time (--dist loadfile) in this order
  (--no-loadscope-reorder): the longest units start first, so that the two workers end together
  instead of one waiting on an end-to-end experiment that started last. The slow modules keep
  their order: the cifar notebook reads back the cifar experiment's compilations.
  """
  modules = {}
  for item in items:
    modules.setdefault(item.path, []).append(item)
  slow = {path for path, tests in modules.items()
          if any(test.get_closest_marker("slow") for test in tests)}
  order = sorted(modules, key=lambda path: (path not in slow,
                                            0 if path in slow else -len(modules[path])))
  items[:] = [item for path in order for item in modules[path]]


def pytest_sessionfinish(session, exitstatus):
  if os.environ.get("CVXJAX_TEST_CACHE_OWNER") == str(os.getpid()):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
