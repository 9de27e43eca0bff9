"""The head interface (`cvxjax.heads.Head`) on every kind of head, and saving heads without pickle.

Tiny hand-built heads (no fitting, except one small polynomial fit for a certified gap): the
methods must give exactly what the functions they stand for give, the linear radius must be the
true distance to the decision boundary, and a saved head must come back bit for bit while a
foreign, corrupt or truncated file is refused with a ValueError naming it.
"""

import dataclasses
import io
import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvxjax import certify, heads, poly, relu
from cvxjax.core.activations import Quadratic
from cvxjax.train import head as network_head

N, D, P, C, H = 8, 3, 4, 3, 5
SUMMARY_KEYS = {"objective", "gap", "violation", "steps", "width"}


def _rank_one(u: np.ndarray, s: float) -> np.ndarray:
  """s²[u; 1][u; 1]ᵀ for a unit u: a point of K, one neuron s² σ(uᵀx)."""
  v = np.append(u / np.linalg.norm(u), 1.0)
  return s**2 * np.outer(v, v)


def _poly_head(rng, classes: int) -> poly.PolyHead:
  """Each Z_c and Z′_c one neuron: 2·classes neurons in all."""
  Z = np.stack([_rank_one(rng.normal(size=D), 1.0 + c) for c in range(classes)])
  Zp = np.stack([_rank_one(rng.normal(size=D), 0.5 + c) for c in range(classes)])
  return poly.PolyHead(Z=jnp.asarray(Z), Zp=jnp.asarray(Zp), objective=jnp.asarray(1.5),
                       gap=jnp.asarray(jnp.inf), steps=jnp.asarray(7, jnp.int32),
                       activation=Quadratic(0.1, 0.5, 0.4), binary=classes == 1)


def _relu_head(rng, gated: bool, bias: bool = False) -> relu.ReluHead:
  weights = rng.normal(size=(1 if gated else 2, P, D + bias, C))
  weights[0, 1] = 0.0  # one pruned neuron per output
  return relu.ReluHead(gates=jnp.asarray(rng.normal(size=(D + bias, P))),
                       weights=jnp.asarray(weights), objective=jnp.asarray(2.0),
                       violation=jnp.asarray(1e-3), steps=jnp.asarray(11, jnp.int32), eps=0.1,
                       p=2, loss="hinge", binary=False, bias=bias)


def _network_params(rng) -> dict:
  return {"W1": jnp.asarray(rng.normal(size=(D, H))), "b1": jnp.asarray(rng.normal(size=H)),
          "W2": jnp.asarray(rng.normal(size=(H, C))), "b2": jnp.asarray(rng.normal(size=C))}


def _heads() -> dict:
  rng = np.random.default_rng(0)
  return {"poly binary": _poly_head(rng, 1), "poly one-vs-all": _poly_head(rng, C),
          "relu": _relu_head(rng, gated=False), "gated": _relu_head(rng, gated=True),
          "relu bias": _relu_head(rng, gated=False, bias=True),
          "gated bias": _relu_head(rng, gated=True, bias=True),
          "network": heads.NetworkHead(**_network_params(rng)),
          "linear": heads.LinearHead(kernel=jnp.asarray(rng.normal(size=(D, C))),
                                     bias=jnp.asarray(rng.normal(size=C)))}


def _data(head):
  """Inputs and the head's own predictions as labels, one of them flipped (misclassified)."""
  X = jnp.asarray(np.random.default_rng(1).normal(size=(N, D)))
  y = np.array(head.predict(X))
  y[0] = -y[0] if np.ndim(head.scores(X)) == 1 else (y[0] + 1) % C
  return X, jnp.asarray(y)


HEADS = _heads()


@pytest.mark.parametrize("name", HEADS)
def test_every_head_has_the_interface_and_is_a_pytree(name):
  head = HEADS[name]
  assert isinstance(head, heads.Head)
  X, _ = _data(head)
  # Through jit as a pytree: the same scores as the eager call.
  np.testing.assert_allclose(jax.jit(lambda h, x: h.scores(x))(head, X), head.scores(X),
                             rtol=1e-12)
  f = np.asarray(head.scores(X))
  expected = np.where(f >= 0, 1, -1) if f.ndim == 1 else np.argmax(f, axis=1)
  np.testing.assert_array_equal(head.predict(X), expected)


def _delegate(name, head, X, y, L):
  """The certificate each head's method stands for, called as the module function."""
  if name.startswith("poly"):
    return poly.certified_radius(head, X, y, backbone_lipschitz=L)
  if name.startswith(("relu", "gated")):
    return relu.certified_radius(head, X, y, backbone_lipschitz=L)
  if name == "network":
    return network_head.certified_radius(dataclasses.asdict(head), X, y, backbone_lipschitz=L)
  return certify.linear_certified_radius(head.kernel, head.bias, X, y, backbone_lipschitz=L)


@pytest.mark.parametrize("name", HEADS)
def test_certified_radius_is_the_function_it_stands_for(name):
  head = HEADS[name]
  X, y = _data(head)
  radii = np.asarray(head.certified_radius(X, y, backbone_lipschitz=2.0))
  np.testing.assert_array_equal(radii, _delegate(name, head, X, y, 2.0))
  # Sound bounds: 0 on the misclassified example, never negative, not all 0.
  assert radii.shape == (N,) and radii[0] == 0.0 and np.all(radii >= 0) and radii.max() > 0
  np.testing.assert_allclose(head.certified_radius(X, y), 2.0 * radii, rtol=1e-12)
  with pytest.raises(ValueError, match="backbone_lipschitz"):
    head.certified_radius(X, y, backbone_lipschitz=0.0)


def test_linear_radius_is_the_distance_to_the_decision_boundary():
  head = HEADS["linear"]
  X, y = _data(head)
  radii = np.asarray(head.certified_radius(X, y))
  W = np.asarray(head.kernel)
  for x, label, r in zip(np.asarray(X)[1:], np.asarray(y)[1:], radii[1:], strict=True):
    f = x @ W + np.asarray(head.bias)
    # The closest rival's boundary, reached along w_t − w_y: just short keeps the label.
    t = min((c for c in range(C) if c != label),
            key=lambda c: (f[label] - f[c]) / np.linalg.norm(W[:, label] - W[:, c]))
    step = (W[:, t] - W[:, label]) / np.linalg.norm(W[:, t] - W[:, label])
    for scale, kept in ((1 - 1e-6, True), (1 + 1e-6, False)):
      moved = (x + scale * r * step) @ W + np.asarray(head.bias)
      assert (np.argmax(moved) == label) == kept


def test_summaries_say_none_where_a_number_does_not_exist():
  for head in HEADS.values():
    assert set(head.summary()) == SUMMARY_KEYS
  # One neuron in each Z_c and Z′_c; an uncomputed gap (inf) is reported as None.
  assert HEADS["poly binary"].summary() == dict(objective=1.5, gap=None, violation=None, steps=7,
                                                width=2)
  assert HEADS["poly one-vs-all"].summary()["width"] == 2 * C
  # P neurons per block and output, one of them zero in the first block.
  assert HEADS["relu"].summary() == dict(objective=2.0, gap=None, violation=1e-3, steps=11,
                                         width=2 * P * C - C)
  assert HEADS["gated"].summary()["width"] == P * C - C
  barrier = dataclasses.replace(HEADS["relu"], gap=jnp.asarray(1e-7))
  assert barrier.summary()["gap"] == 1e-7
  assert HEADS["network"].summary() == dict(objective=None, gap=None, violation=None, steps=None,
                                            width=H)
  assert set(HEADS["linear"].summary().values()) == {None}


def test_a_fitted_polynomial_head_reports_its_certified_gap():
  rng = np.random.default_rng(2)
  X = rng.normal(size=(12, 2))
  y = np.where(X[:, 0] * X[:, 1] > 0, 1, -1)
  head = poly.fit(X, y, beta=1e-2, solver="barrier", tol=1e-6)
  summary = head.summary()
  assert summary["gap"] == float(head.gap) and 0 <= summary["gap"] < np.inf
  assert summary["objective"] == float(head.objective) and summary["steps"] == int(head.steps)


def _assert_same(loaded, head):
  assert type(loaded) is type(head)
  for field in dataclasses.fields(head):
    a, b = getattr(loaded, field.name), getattr(head, field.name)
    if isinstance(b, jax.Array | np.ndarray):
      assert a.dtype == b.dtype and a.shape == b.shape, field.name
      np.testing.assert_array_equal(a, np.asarray(b), err_msg=field.name)
    else:
      assert a == b and type(a) is type(b), field.name


@pytest.mark.parametrize("name", HEADS)
def test_saved_heads_come_back_exactly(name, tmp_path):
  head = HEADS[name]
  path = heads.save_head(str(tmp_path / "head.zip"), head)
  loaded = heads.load_head(path)
  _assert_same(loaded, head)
  X, y = _data(head)
  np.testing.assert_array_equal(loaded.scores(X), head.scores(X))
  np.testing.assert_array_equal(loaded.certified_radius(X, y), head.certified_radius(X, y))
  assert not (tmp_path / "head.zip.partial").exists()


def test_float32_and_optional_arrays_round_trip(tmp_path):
  head = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), HEADS["relu"])
  for gap in (None, jnp.asarray(3e-4, jnp.float32)):
    saved = dataclasses.replace(head, gap=gap)
    _assert_same(heads.load_head(heads.save_head(str(tmp_path / "h"), saved)), saved)


def _rewrite(path, *, description=None, drop=(), add=None, replace=None):
  """A copy of a saved head with its description and members changed, written over it."""
  with zipfile.ZipFile(path) as archive:
    members = {n: archive.read(n) for n in archive.namelist()}
  if description is not None:
    members["description.json"] = json.dumps(description(json.loads(members["description.json"])))
  for name in drop:
    del members[name]
  members.update(add or {})
  members.update(replace or {})
  with zipfile.ZipFile(path, "w") as archive:
    for name, data in members.items():
      archive.writestr(name, data)


def _npy(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  np.lib.format.write_array(buffer, array, allow_pickle=True)
  return buffer.getvalue()


def _edit(**changes):
  return lambda d: {**d, **changes}


def _edit_array(name, **spec):
  return lambda d: {**d, "arrays": {**d["arrays"], name: {**d["arrays"][name], **spec}}}


def _drop_setting(d):
  return {**d, "settings": {k: v for k, v in d["settings"].items() if k != "binary"}}


REFUSALS = {
    "wrong kind": (dict(description=_edit(kind="relu")), "settings"),
    "unknown kind": (dict(description=_edit(kind="mlp")), "kind 'mlp'"),
    "other format": (dict(description=_edit(format="something.else")), "not a saved head"),
    "newer version": (dict(description=_edit(version=2)), "version 2"),
    "missing setting": (dict(description=_drop_setting), "settings"),
    "bad setting": (dict(description=lambda d: {**d, "settings": {**d["settings"],
                                                                 "binary": "yes"}}), "binary"),
    "missing array": (dict(drop=("Zp.npy",)), "array files"),
    "extra array": (dict(add={"extra.npy": b"\x93NUMPY"}), "array files"),
    "wrong shape": (dict(description=_edit_array("Z", shape=[1, 2, 2])), "shape"),
    "wrong dtype": (dict(description=_edit_array("Z", dtype="<f4")), "dtype"),
    "required array null": (dict(description=lambda d: {**d, "arrays": {**d["arrays"],
                                                                       "Z": None}}), "required"),
    "not json": (dict(replace={"description.json": b"{not json"}), "not JSON"),
    "no description": (dict(drop=("description.json",)), "description.json"),
    "truncated array": (dict(replace={"Z.npy": b"\x93NUMPY\x01\x00"}), "cannot be read"),
    # A pickled object array: never unpickled, whatever its description says.
    "object array": (dict(replace={"Z.npy": _npy(np.array([print], dtype=object))}),
                     "cannot be read"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_foreign_and_corrupt_files_are_refused_naming_the_file(case, tmp_path):
  path = str(tmp_path / f"{case.replace(' ', '_')}.head")
  heads.save_head(path, HEADS["poly binary"])
  changes, message = REFUSALS[case]
  _rewrite(path, **changes)
  with pytest.raises(ValueError, match=message) as raised:
    heads.load_head(path)
  assert path in str(raised.value)


def test_truncated_corrupted_and_foreign_bytes_are_refused(tmp_path):
  path = tmp_path / "head.zip"
  heads.save_head(str(path), HEADS["relu"])
  data = path.read_bytes()
  cases = {"truncated": data[:len(data) // 2],
           "pickle": b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00.",
           "json": json.dumps({"kind": "relu"}).encode(),
           "empty": b""}
  # One byte flipped inside an array: the zip's CRC-32 catches it.
  offset = data.index(b"\x93NUMPY") + 200
  cases["flipped byte"] = data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:]
  for case, content in cases.items():
    bad = tmp_path / case
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=str(bad)):
      heads.load_head(str(bad))


def test_saving_something_else_is_refused(tmp_path):
  with pytest.raises(ValueError, match="head must be one of"):
    heads.save_head(str(tmp_path / "h"), dataclasses.asdict(HEADS["network"]))
  with pytest.raises(ValueError, match="numeric"):
    heads.save_head(str(tmp_path / "h"), heads.LinearHead(np.array([[print]]), np.zeros(1)))
  assert heads.kind(HEADS["gated"]) == "relu" and heads.kind(HEADS["linear"]) == "linear"
