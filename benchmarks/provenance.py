"""What a benchmark's JSON records about the code it measured (imported by the scripts here)."""

import subprocess


def git_state() -> dict:
  """The commit of the working tree and whether cvxjax/ differs from it (None outside git)."""
  def git(*args):
    try:
      return subprocess.run(("git", *args), capture_output=True, text=True, check=True,
                            timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
      return None

  status = git("status", "--porcelain", "--", "cvxjax")
  return dict(commit=git("rev-parse", "HEAD"), cvxjax_modified=None if status is None
              else bool(status))
