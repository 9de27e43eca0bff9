"""Saving and restoring solver states (any pytree of arrays) with orbax.

orbax is imported by the functions that use it, not with this module: it is slow to import, and
only runs that save or resume checkpoints need it.
"""

import os
from typing import Any, Optional

import jax


def manager(directory: str, max_to_keep: int = 2):
  """An orbax `CheckpointManager` over `directory` (created if missing), keeping the last few."""
  import orbax.checkpoint as ocp
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(mgr, step: int, state: Any) -> None:
  """Writes `state` as checkpoint `step` of the `manager` mgr and waits until it is on disk."""
  import orbax.checkpoint as ocp
  mgr.save(step, args=ocp.args.StandardSave(state))
  mgr.wait_until_finished()


def restore_latest(mgr, like: Any) -> Optional[Any]:
  """The latest checkpoint of the `manager` mgr restored into the structure, shapes and dtypes of
  `like`, or None."""
  import orbax.checkpoint as ocp
  step = mgr.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  return mgr.restore(step, args=ocp.args.StandardRestore(abstract))
