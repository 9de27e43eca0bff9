"""Frozen backbone features: extracted once per backbone checkpoint and cached on disk.

A cached file is named by the checkpoint's identity (a hash of every parameter and statistic)
and the images' identity, so a retrained or changed backbone, or other images, never reuse
stale features.
"""

import hashlib
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

FeatureFn = Callable[[Any, jnp.ndarray], jnp.ndarray]


def identity(tree: Any) -> str:
  """A 16-hex-digit hash of a pytree of arrays: its structure, shapes, dtypes and values.

  Args:
    tree: any pytree of arrays (a backbone's variables, an image array).

  Returns:
    The hash, equal for equal trees and (with overwhelming probability) different otherwise.
  """
  digest = hashlib.sha256(str(jax.tree_util.tree_structure(tree)).encode())
  for leaf in jax.tree_util.tree_leaves(tree):
    leaf = np.ascontiguousarray(jax.device_get(leaf))
    digest.update(f"{leaf.shape}{leaf.dtype}".encode())
    digest.update(leaf.tobytes())
  return digest.hexdigest()[:16]


def extract(features: FeatureFn, variables: Any, images: np.ndarray, *, batch_size: int = 512,
            progress: bool = False) -> np.ndarray:
  """Features of every image, in batches of one shape (the last one padded).

  Args:
    features: jit-able (variables, x (b, ...)) -> (b, k) features.
    variables: the backbone's variables.
    images: (n, ...) inputs.
    batch_size: images per call.
    progress: show a progress bar.

  Returns:
    (n, k) float32 features.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
  n = len(images)
  apply = jax.jit(features)
  out = []
  for start in tqdm.trange(0, n, batch_size, disable=not progress, desc="features"):
    index = np.minimum(np.arange(start, start + batch_size), n - 1)  # pad with the last image
    out.append(np.asarray(apply(variables, jnp.asarray(images[index])), np.float32)
               [: min(batch_size, n - start)])
  return np.concatenate(out)


def cached(cache_dir: str, name: str, features: FeatureFn, variables: Any, images: np.ndarray,
           **extract_kwargs) -> np.ndarray:
  """`extract`'s features, read from `cache_dir` when this backbone and these images were seen.

  The file `{name}-{identity(variables)}-{identity(images)}.npy` is written atomically (a
  temporary file renamed), so an interrupted run never leaves a truncated cache behind.

  Args:
    cache_dir: directory of the cache (created if missing).
    name: a label for the file (e.g. "sgd-train").
    features, variables, images, **extract_kwargs: as for `extract`.

  Returns:
    (n, k) float32 features.
  """
  os.makedirs(cache_dir, exist_ok=True)
  path = os.path.join(cache_dir, f"{name}-{identity(variables)}-{identity(images)}.npy")
  if os.path.exists(path):
    return np.load(path)
  values = extract(features, variables, images, **extract_kwargs)
  partial = path + ".partial.npy"
  np.save(partial, values)
  os.replace(partial, path)
  return values
