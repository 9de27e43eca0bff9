"""Saving and restoring solver states (any pytree of arrays) with orbax."""

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """An orbax `CheckpointManager` over `directory` (created if missing), keeping the last few."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(mgr: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Writes `state` as checkpoint `step` and waits until it is on disk."""
  mgr.save(step, args=ocp.args.StandardSave(state))
  mgr.wait_until_finished()


def restore_latest(mgr: ocp.CheckpointManager, like: Any) -> Optional[Any]:
  """The latest checkpoint restored into the structure, shapes and dtypes of `like`, or None."""
  step = mgr.latest_step()
  if step is None:
    return None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  return mgr.restore(step, args=ocp.args.StandardRestore(abstract))
