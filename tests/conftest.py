"""Test configuration: float64 (oracle comparisons at 1e-4 and feasibility at 1e-6 need it).

No persistent compilation cache: writing one SOC network's executable to it crashed the
process once (a segmentation fault inside jax's cache write), and a crash loses the whole run.
"""

import os

# XLA's thread pool and OpenBLAS's threads contend on small machines (see solvers/driver.py).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
