r"""How the hot paths of the solvers scale with n, d, P and C, and their fraction of matmul peak.

  python -m benchmarks.scaling             # about 8 minutes on 2 CPU cores
  python -m benchmarks.scaling --quick     # the smallest sizes, under a minute

Every hot path is one jitted call, measured by `benchmarks.costs.measure`: XLA's FLOP count,
the memory XLA plans for the call, and the median wall clock of --repeats calls. The paths,
in float32 (the GPU default):

  trs          the exact worst-case margin of every example of a polynomial head
               (`poly.worst_case`: one eigh of D₁, one n×d×d product XQ, a vectorised
               secular-equation solve);
  poly_step    one projected step of an adversarial polynomial head (`projected.Solver.step`:
               the worst case, the Danskin gradient, two projections onto K, after ten steps
               of `loop.run`); its FLOPs count three eighs, though each projection runs 2 or
               3: its fraction of peak is a lower bound;
  eigh         one (d+1)² `eigh`, the LAPACK call that XLA counts as 0 FLOPs;
  relu_grad    the APG gradient of a gated head, F W and Fᵀ R over P patterns and C classes;
  pgd_step     one PGD iteration against a polynomial head on a batch (forward and backward).

For each path the time per call is fitted as c·size^k over the sweep of one size (the others
held fixed): k is the scaling exponent; the exponent between the two largest sizes shows the
law once the costs that do not grow with the swept size (the eighs in n) have faded. The
fraction of peak is the path's achieved FLOP rate over this machine's measured float32 matmul
rate (2048², median). For the polynomial paths the FLOPs include 9m³ per m×m eigh (LAPACK's
count for eigenvalues and eigenvectors), which XLA does not count. Results go to
benchmarks/results/scaling.json.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # XLA's and OpenBLAS's threads contend

import argparse  # noqa: E402
import json  # noqa: E402
from unittest import mock  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks import costs  # noqa: E402
from benchmarks.provenance import git_state  # noqa: E402
from cvxjax import DEFAULT_ACTIVATION, attacks, poly, relu  # noqa: E402
from cvxjax.core import poly as poly_core  # noqa: E402
from cvxjax.core import psd  # noqa: E402
from cvxjax.solvers import loop, projected, proximal  # noqa: E402

DEFAULT_OUT = "benchmarks/results/scaling.json"
_R = 0.5


def _eigh_gflops(m: int, count: int) -> float:
  return 9.0 * m**3 * count / 1e9


def _poly_problem(n: int, d: int, key):
  """Random features, labels ±1 and a random Z − Z′ of the right scale."""
  kx, kz = jax.random.split(key)
  X = jax.random.normal(kx, (n, d), jnp.float32)
  s = jnp.where(jnp.arange(n) % 2 == 0, 1.0, -1.0).astype(jnp.float32)
  A = jax.random.normal(kz, (d + 1, d + 1), jnp.float32) / d
  Z = psd.project_trace_psd(A @ A.T)
  return X, s, Z, 0.5 * Z


def matmul_peak(repeats: int) -> float:
  """GFLOP/s of a 2048² float32 matmul (median)."""
  a = jnp.ones((2048, 2048), jnp.float32)
  cost = costs.measure(lambda a, b: a @ b, a, a, repeats=max(repeats, 5))
  return 2 * 2048**3 / 1e9 / cost.seconds


def in_one_batch(fn):
  """fn traced with the worst case in one batch (`default_block_rows` → None): the same
  arithmetic as the row-blocked call, whose loop body XLA would count once."""
  def traced(*args):
    # `cvxjax.core.poly.worst_case` reads its own module's name (`cvxjax.poly` re-exports it).
    with mock.patch.object(poly_core, "default_block_rows", lambda X: None):
      return fn(*args)
  return traced


def trs(n: int, d: int, repeats: int) -> dict:
  X, s, Z, Zp = _poly_problem(n, d, jax.random.key(0))
  margin = lambda D, X, s: poly.worst_case(D, X, s, _R).margin
  cost = costs.measure(margin, Z - Zp, X, s, repeats=repeats, counted=in_one_batch(margin))
  return _row(cost, _eigh_gflops(d, 1))


def poly_step(n: int, d: int, repeats: int) -> dict:
  X, s, Z, Zp = _poly_problem(n, d, jax.random.key(0))
  problem = poly_core.Problem(X, s[None, :], r=_R, beta=1e-3, activation=DEFAULT_ACTIVATION)
  solver = projected.Solver(optimizer=optax.adam(1e-2))
  # Ten steps of `loop.run` first: the timed projections start from their last multipliers, as
  # in a run. The timed call is the solver's `step`, the body of the loop's jitted chunks.
  state = loop.run(solver, problem, max_steps=10, start=(Z[None], Zp[None])).state
  cost = costs.measure(solver.step, problem, state, repeats=repeats,
                       counted=in_one_batch(solver.step))
  return _row(cost, _eigh_gflops(d, 1) + _eigh_gflops(d + 1, 2))


def eigh(d: int, repeats: int) -> dict:
  _, _, Z, _ = _poly_problem(4, d, jax.random.key(0))
  cost = costs.measure(jnp.linalg.eigh, Z, repeats=repeats)
  return _row(cost, _eigh_gflops(d + 1, 1))


def relu_grad(n: int, d: int, P: int, C: int, repeats: int) -> dict:
  kx, kg, kw = jax.random.split(jax.random.key(0), 3)
  X = jax.random.normal(kx, (n, d), jnp.float32)
  D = relu.sign_patterns(X, jax.random.normal(kg, (d, P), jnp.float32)).astype(jnp.float32)
  W = jax.random.normal(kw, (1, P, d, C), jnp.float32)
  Y = jax.nn.one_hot(jnp.arange(n) % C, C, dtype=jnp.float32)
  return _row(costs.measure(proximal.loss_gradient, W, X, D, Y, repeats=repeats), 0.0)


def pgd_step(n: int, d: int, repeats: int) -> dict:
  X, s, Z, Zp = _poly_problem(n, d, jax.random.key(0))
  margin = lambda x: jnp.sum(s * poly.lifted_predict(Z - Zp, x, DEFAULT_ACTIVATION))
  step = lambda x: attacks.project(x - 0.1 * jax.grad(margin)(x), X, 0.5, 2)
  return _row(costs.measure(step, X, repeats=repeats), 0.0)


def _row(cost: costs.Cost, extra_gflops: float) -> dict:
  gflops = cost.gflops + extra_gflops
  return dict(seconds=cost.seconds, gflops=gflops, xla_gflops=cost.gflops,
              planned_mb=cost.planned_bytes / 2**20, gflop_per_s=gflops / cost.seconds)


def exponent(sizes, seconds) -> float:
  """k of the least-squares fit seconds ≈ c·size^k (log-log slope)."""
  return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def sweeps(quick: bool):
  """{path: {swept size name: (values, fixed settings)}}."""
  if quick:
    return {"trs": {"n": ([2048, 4096], dict(d=64)), "d": ([32, 64], dict(n=2048))},
            "poly_step": {"n": ([2048, 4096], dict(d=64)), "d": ([32, 64], dict(n=2048))},
            "relu_grad": {"n": ([2048, 4096], dict(d=64, P=32, C=2))},
            "pgd_step": {"n": ([2048, 4096], dict(d=64))}}
  return {
      "trs": {"n": ([4096, 8192, 16384, 32768, 65536, 131072], dict(d=256)),
              "d": ([64, 128, 256, 512, 1024], dict(n=8192))},
      "poly_step": {"n": ([4096, 8192, 16384, 32768, 65536, 131072], dict(d=256)),
                    "d": ([64, 128, 256, 512, 1024], dict(n=8192))},
      "eigh": {"d": ([64, 128, 256, 512], dict())},
      "relu_grad": {"n": ([4096, 8192, 16384, 32768], dict(d=256, P=64, C=10)),
                    "d": ([64, 128, 256, 512], dict(n=8192, P=64, C=10)),
                    "P": ([16, 32, 64, 128], dict(n=8192, d=256, C=10)),
                    "C": ([2, 5, 10, 20], dict(n=8192, d=256, P=64))},
      "pgd_step": {"n": ([4096, 8192, 16384, 32768], dict(d=256)),
                   "d": ([64, 128, 256, 512], dict(n=8192))},
  }


_PATHS = dict(trs=trs, poly_step=poly_step, eigh=eigh, relu_grad=relu_grad, pgd_step=pgd_step)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="the smallest sizes only")
  parser.add_argument("--repeats", type=int, default=3, help="timed calls per point (median)")
  parser.add_argument("--out", default=DEFAULT_OUT, help="JSON results file")
  args = parser.parse_args(argv)
  peak = matmul_peak(args.repeats)
  print(f"float32 matmul peak on {jax.devices()[0]}: {peak:.1f} GFLOP/s")
  report = dict(meta=dict(device=str(jax.devices()[0]), cpu_count=os.cpu_count(),
                          loadavg_before=os.getloadavg(), git=git_state(), args=vars(args)),
                matmul_gflop_per_s=peak, paths={})
  print(f"{'path':>10} {'swept':>5} {'value':>6} {'seconds':>9} {'GFLOP':>8} {'GFLOP/s':>8} "
        f"{'of peak':>7} {'XLA MB':>8}")
  for path, swept in sweeps(args.quick).items():
    report["paths"][path] = {}
    for name, (values, fixed) in swept.items():
      rows = []
      for value in values:
        row = _PATHS[path](**{**fixed, name: value}, repeats=args.repeats)
        row.update(fixed, **{name: value}, fraction_of_peak=row["gflop_per_s"] / peak)
        rows.append(row)
        print(f"{path:>10} {name:>5} {value:>6} {row['seconds']:9.4f} {row['gflops']:8.2f} "
              f"{row['gflop_per_s']:8.1f} {row['fraction_of_peak']:7.0%} "
              f"{row['planned_mb']:8.1f}", flush=True)
      seconds = [r["seconds"] for r in rows]
      k, k_top = exponent(values, seconds), exponent(values[-2:], seconds[-2:])
      report["paths"][path][name] = dict(rows=rows, exponent=k, exponent_largest=k_top)
      print(f"{path:>10} {name:>5}   time ∝ {name}^{k:.2f} ({name}^{k_top:.2f} between the "
            "two largest)")
  report["meta"]["loadavg_after"] = os.getloadavg()
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(report, f, indent=1)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
