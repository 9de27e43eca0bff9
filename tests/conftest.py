"""Test configuration: float64 (oracle comparisons at 1e-4 and feasibility at 1e-6 need it), and
a persistent compilation cache, so that the pipeline runs that share shapes compile once."""

import os
import tempfile

# XLA's thread pool and OpenBLAS's threads contend on small machines (see solvers/driver.py).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(tempfile.gettempdir(), "cvxjax-tests-jax-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
