r"""The benchmark suite: every benchmark of the project, then one table (markdown and JSON).

  python -m benchmarks                  # everything at full size: about an hour on 2 CPU cores
  python -m benchmarks --quick          # each benchmark's quick mode: about 10 minutes
  python -m benchmarks --only scaling relu_vs_scnn
  python -m benchmarks --summarize      # only rebuild the table from the JSON already written

Each benchmark runs in a process of its own and writes its JSON under --results (quick runs
under --results/quick, so they never overwrite full ones). A benchmark whose peer is not
installed (scnn: `pip install pyscnn`; torchattacks and torch) is reported as skipped. The
table (`suite.md`, `suite.json` beside the JSON files) has one row per comparison: cvxjax's
time, the peer's time measured in the same run, their ratio, and what was compared. Keep the
machine otherwise idle: every script records the load average around its timings.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys

_SCRIPTS = {
    # name: (command after `python`, its quick flags, the peer modules it needs)
    "poly_vs_cvxpy": (["benchmarks/poly_vs_cvxpy.py"], ["--quick"], ["cvxpy", "scs"]),
    "relu_vs_scnn": (["benchmarks/relu_vs_scnn.py"], ["--quick"], ["scnn"]),
    "robust_relu_vs_cvxpy": (["benchmarks/robust_relu_vs_cvxpy.py"], ["--quick"],
                             ["cvxpy", "clarabel"]),
    "attacks_vs_torchattacks": (["benchmarks/attacks_vs_torchattacks.py"], ["--quick"],
                                ["torch", "torchattacks"]),
    "scaling": (["-m", "benchmarks.scaling"], ["--quick"], []),
    "poly_at_scale": (["-m", "benchmarks.poly_at_scale"], ["--quick"], []),
    "relu_at_scale": (["-m", "benchmarks.relu_at_scale"], ["--quick"], []),
    "cifar_stage_costs": (["-m", "benchmarks.cifar_stage_costs"], ["--width=8"], []),
}


def _missing(modules) -> list:
  return [m for m in modules if importlib.util.find_spec(m) is None]


def run(name: str, out: str, quick: bool) -> dict:
  """Runs one benchmark in its own process; returns {status, returncode}."""
  command, quick_flags, peers = _SCRIPTS[name]
  missing = _missing(peers)
  if missing:
    return dict(status=f"skipped: {', '.join(missing)} not installed")
  flag = "--out=" + out
  argv = [sys.executable, *command, *(quick_flags if quick else []), flag]
  print("+", " ".join(argv), flush=True)
  env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
  code = subprocess.run(argv, env=env, check=False).returncode
  return dict(status="ran" if code == 0 else f"failed (exit {code})", returncode=code)


def _ratio(peer, ours):
  return None if peer is None or ours is None or ours <= 0 else peer / ours


def _poly_rows(data: dict) -> list:
  rows = []
  for r in data["results"]:
    for name in ("interior", "barrier", "sdp"):
      if name not in r:
        continue
      ours = (r[name].get("target") or {}).get("time_s")
      rows.append(dict(comparison=f"poly head SDP, n={r['n']}, d={r['d']}: {name} to SCS's value",
                       cvxjax_s=ours, peer="CVXPY+SCS", peer_s=r["scs"]["wall_s"],
                       note=f"{name} then certifies a {r[name]['final_rel_gap']:.1e} gap"))
  return rows


def _relu_rows(data: dict) -> list:
  rows = []
  for r in data["results"]:
    solvers = r["cvxjax"]
    reached = [(v["time_to_target_s"], k) for k, v in solvers.items()
               if v.get("time_to_target_s") is not None]
    best = min(reached) if reached else (None, None)
    scnn = r["scnn"]
    peer_s = scnn["time_to_target_s"] if scnn.get("reached") else scnn["wall_s"]
    note = (f"scnn {scnn['solver']} {'reached' if scnn.get('reached') else 'did not reach'} "
            f"the target in {scnn['wall_s']:.1f} s; cvxjax: "
            + ", ".join(f"{k} {v['stop']}" for k, v in solvers.items()))
    rows.append(dict(comparison=f"{r['problem']} ReLU, P={r['patterns']}: time to 1e-4 of the "
                     f"best objective ({best[1] or 'no solver reached it'})",
                     cvxjax_s=best[0], peer=f"scnn {scnn['solver']}", peer_s=peer_s, note=note))
  return rows


def _robust_relu_rows(data: dict) -> list:
  args = data["meta"]["args"]
  return [dict(comparison=f"robust convex ReLU ({r['ball']}, ε={r['eps']:g}), n={args['n']}, "
               f"P={args['patterns']}: solver={r.get('solver', 'auto')!r} against the exact "
               "optimum",
               cvxjax_s=r["cvxjax_s"], peer="CVXPY+Clarabel", peer_s=r["clarabel_s"],
               note=f"cvxjax ends {r['above']:.1e} above the optimum, certified gap "
               f"{r['gap']:.1e}, violation {r['violation']:.1e}, {r['steps']} steps")
          for r in data["results"]]


def _attack_rows(data: dict) -> list:
  rows = []
  eps = data["eps"]
  ours, theirs = data["cvxjax"]["timing"], data["torchattacks"]["timing"]
  for attack in theirs:
    if attack not in ours:
      continue
    for k, e in enumerate(eps):
      rows.append(dict(comparison=f"{attack} on digits MLP, eps={e:g}", cvxjax_s=ours[attack][
          "median_s"][k], peer="torchattacks", peer_s=theirs[attack]["median_s"][k], note=""))
  return rows


def _scaling_rows(data: dict) -> list:
  rows = []
  for path, sweeps in data["paths"].items():
    for name, sweep in sweeps.items():
      last = sweep["rows"][-1]
      top = (f" ({name}^{sweep['exponent_largest']:.2f} at the largest)"
             if "exponent_largest" in sweep else "")
      rows.append(dict(comparison=f"{path}: time ∝ {name}^{sweep['exponent']:.2f}{top}",
                       cvxjax_s=last["seconds"], peer="matmul peak",
                       peer_s=None, note=f"at {name}={last[name]}: {last['gflop_per_s']:.1f} "
                       f"GFLOP/s = {last['fraction_of_peak']:.0%} of "
                       f"{data['matmul_gflop_per_s']:.0f} GFLOP/s; XLA plans "
                       f"{last['planned_mb']:.0f} MB"))
  return rows


def _poly_scale_rows(data: dict) -> list:
  median_objective = lambda r: statistics.median(h["objective"] for h in r["heads"])
  return [dict(comparison=f"{len(r['heads'])} of {r['classes']} one-vs-all poly heads, "
               f"n={r['n']}, d={r['d']}, r={r['r']:g}, solver={r['solver']!r}: time to fit them",
               cvxjax_s=r["seconds_all_heads"], peer="matmul peak", peer_s=None,
               note=f"median objective {median_objective(r):.3g}; "
               f"{r['certified_heads']}/{len(r['heads'])} heads certified to {r['tol']:g} "
               f"(largest relative gap {max(h['relative_gap'] for h in r['heads']):.1e}, "
               f"{max(h['steps'] for h in r['heads'])} steps at most); step at "
               f"{r['matmul_fraction']:.0%} of matmul; peak RSS {r['peak_rss_gib']:.2f} GiB")
          for r in data["results"]]


def _relu_scale_rows(data: dict) -> list:
  return [dict(comparison=f"{r['family']} head, n={r['n']}, d={r['d']}, P={r['patterns']}, "
               f"C={r['classes']}: time to fit it", cvxjax_s=r["seconds"], peer=None, peer_s=None,
               note=f"objective {r['objective']:.4g}, relative gap {r['relative_gap']:.1e} "
               f"({'certified' if r['certified'] else 'missed'}) after {r['steps']} steps; step "
               f"{r['step_seconds'] * 1e3:.0f} ms; peak RSS {r['peak_rss_gib']:.2f} GiB")
          for r in data["results"]]


def _stage_rows(data: dict) -> list:
  return [dict(comparison=f"ResNet-18 (width {data['width']}) {name}, per example",
               cvxjax_s=stage["cpu_seconds_per_example"], peer=None, peer_s=None,
               note=f"{stage['gflop_per_example']:.3f} GFLOP/example; full run ≈ "
               f"{stage['projected_gpu_hours']:.2f} GPU h at {data['assumed_tflops']:g} TFLOP/s")
          for name, stage in data["stages"].items()]


_SUMMARIES = dict(poly_vs_cvxpy=_poly_rows, relu_vs_scnn=_relu_rows,
                  robust_relu_vs_cvxpy=_robust_relu_rows,
                  attacks_vs_torchattacks=_attack_rows, scaling=_scaling_rows,
                  poly_at_scale=_poly_scale_rows, relu_at_scale=_relu_scale_rows,
                  cifar_stage_costs=_stage_rows)


def summarize(directory: str, statuses: dict) -> list:
  """One row per comparison from every benchmark's JSON in `directory`."""
  rows = []
  for name, summary in _SUMMARIES.items():
    path = os.path.join(directory, f"{name}.json")
    status = statuses.get(name, {}).get("status", "not run now")
    if not os.path.exists(path):
      rows.append(dict(benchmark=name, comparison=status, cvxjax_s=None, peer=None, peer_s=None,
                       note="no results file"))
      continue
    with open(path) as f:
      data = json.load(f)
    for row in summary(data):
      row = dict(benchmark=name, **row)
      row["ratio"] = _ratio(row["peer_s"], row["cvxjax_s"])
      rows.append(row)
  return rows


def _cell(value, spec="") -> str:
  return "—" if value is None else format(value, spec)


def markdown(rows: list) -> str:
  lines = ["| benchmark | comparison | cvxjax s | peer | peer s | peer / cvxjax | note |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['benchmark']} | {r['comparison']} | {_cell(r['cvxjax_s'], '.4g')} | "
                 f"{_cell(r['peer'])} | {_cell(r['peer_s'], '.4g')} | "
                 f"{_cell(r.get('ratio'), '.1f')} | {r['note']} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="each benchmark's quick mode")
  parser.add_argument("--only", nargs="+", choices=sorted(_SCRIPTS), help="benchmarks to run")
  parser.add_argument("--summarize", action="store_true", help="run nothing, rebuild the table")
  parser.add_argument("--results", default="benchmarks/results", help="results directory")
  args = parser.parse_args(argv)
  directory = os.path.join(args.results, "quick") if args.quick else args.results
  os.makedirs(directory, exist_ok=True)
  statuses = {}
  if not args.summarize:
    for name in args.only or _SCRIPTS:
      statuses[name] = run(name, os.path.join(directory, f"{name}.json"), args.quick)
      print(f"{name}: {statuses[name]['status']}", flush=True)
  rows = summarize(directory, statuses)
  table = markdown(rows)
  with open(os.path.join(directory, "suite.md"), "w") as f:
    f.write(table)
  with open(os.path.join(directory, "suite.json"), "w") as f:
    json.dump(dict(statuses=statuses, rows=rows), f, indent=1)
  print(table)
  return 0 if all(s.get("returncode", 0) == 0 for s in statuses.values()) else 1


if __name__ == "__main__":
  raise SystemExit(main())
