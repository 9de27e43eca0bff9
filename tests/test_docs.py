"""The project's documents: the API reference builds, every relative link resolves, the README
stays a user's guide."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Pages of the reference and a name each must document.
REFERENCE_PAGES = {"cvxjax/poly.html": "fit", "cvxjax/relu.html": "fit",
                   "cvxjax/attacks.html": "apgd", "cvxjax/certify.html": "certified"}

_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)


def _prose(text: str) -> str:
  """The Markdown without fenced code blocks (whose lines may look like headings or links)."""
  return _FENCE.sub("", text)


def _slug(heading: str) -> str:
  """GitHub's anchor of a heading: its text lowercased, punctuation dropped, spaces to hyphens."""
  text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
  return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _anchors(path: pathlib.Path) -> set:
  """Every heading anchor of a Markdown file, with GitHub's -1, -2, … for repeats."""
  seen: dict = {}
  anchors = set()
  for _, heading in _HEADING.findall(_prose(path.read_text(encoding="utf-8"))):
    slug = _slug(heading)
    anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
    seen[slug] = seen.get(slug, 0) + 1
  return anchors


def _relative_links(path: pathlib.Path) -> list:
  prose = _INLINE_CODE.sub("", _prose(path.read_text(encoding="utf-8")))
  return [link for link in _LINK.findall(prose)
          if not re.match(r"^[a-z][a-z0-9+.-]*:", link)]  # http:, https:, mailto: …


def test_slug_follows_github():
  assert _slug("3. Adversarial training of the polynomial network") == (
      "3-adversarial-training-of-the-polynomial-network")
  assert _slug("Danskin's gradient and the worst case's curvature") == (
      "danskins-gradient-and-the-worst-cases-curvature")
  assert _slug("`relu_vs_scnn.py`: convex ReLU / gated-ReLU solvers vs. scnn") == (
      "relu_vs_scnnpy-convex-relu--gated-relu-solvers-vs-scnn")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document):
  links = _relative_links(document)
  broken = []
  for link in links:
    target, _, anchor = link.partition("#")
    path = (document.parent / target).resolve() if target else document
    if not path.exists():
      broken.append(f"{link}: no file {path}")
    elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
      broken.append(f"{link}: no heading #{anchor} in {path.name}")
  assert not broken, f"{document.name} has broken links:\n" + "\n".join(broken)


def test_documents_link_to_each_other():
  readme_links = {link.partition("#")[0] for link in _relative_links(README)}
  assert {"docs/index.md", "docs/math.md", "docs/solvers.md", "docs/gpu.md",
          "benchmarks/README.md"} <= readme_links


def test_math_sections_are_numbered_as_cited():
  """The code cites `docs/math.md §N`: sections 1 to 7, in order, as level-2 headings."""
  text = _prose((ROOT / "docs" / "math.md").read_text(encoding="utf-8"))
  numbers = [int(n) for n in re.findall(r"^## (\d+)\. ", text, re.MULTILINE)]
  assert numbers == list(range(1, 8))


def test_readme_is_short():
  assert len(README.read_bytes()) < 12 * 1024


def test_api_reference_builds(tmp_path):
  env = dict(os.environ, OPENBLAS_NUM_THREADS="1", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "pdoc", "-o", str(tmp_path), "cvxjax"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  assert (tmp_path / "index.html").stat().st_size > 0
  assert "cvxjax" in (tmp_path / "cvxjax.html").read_text(encoding="utf-8")
  for page, name in REFERENCE_PAGES.items():
    html = (tmp_path / page).read_text(encoding="utf-8")
    assert f'id="{name}' in html, f"{page} documents no {name}"


def test_the_project_cites_its_own_documents_and_loads_nothing_with_pickle():
  sources = [p for folder in ("cvxjax", "experiments", "benchmarks", "colab", "docs")
             for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".ipynb", ".md")]
  sources.append(ROOT / "README.md")
  outside = ("MATH.md", "ARCHITECTURE.md", "shared/seeds")
  citing = [str(p.relative_to(ROOT)) for p in sources
            if any(name in p.read_text() for name in outside)]
  assert not citing, f"cite docs/math.md, not a document outside the project: {citing}"
  pickling = [str(p.relative_to(ROOT)) for p in sources
              if p.suffix == ".py" and re.search(r"^\s*(import|from) (c?pickle|dill)\b",
                                                 p.read_text(), re.MULTILINE)]
  assert not pickling, f"saved things go through npy/JSON, never pickle: {pickling}"
