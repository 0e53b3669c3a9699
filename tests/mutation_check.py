"""Mutation check: does the suite catch each curated bug of tests/mutations.py?

  python -m tests.mutation_check              # every mutation, one after another
  python -m tests.mutation_check --jobs=2     # two at a time
  python -m tests.mutation_check --only=dice_eps_0,lambda_dropped
  python -m tests.mutation_check --list

For each mutation: copy the working tree (tracked and untracked, not ignored files) to a
temporary folder, apply the one-line change there, run the tests named for it with the
copy first on PYTHONPATH, and print `caught` (a test failed) or `SURVIVED`. The tests
are first run once unmutated on a clean copy: a check whose tests already fail proves
nothing, so it stops. The working tree itself is never changed.

Opt-in: it is not part of the default pytest run (it runs pytest many times). Exit
status 0 when every mutation is caught, 1 when one survives or cannot be checked.
"""
import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Iterable, List, Optional, Sequence, Tuple

from tests.mutations import MUTATIONS, Mutation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# pytest's exit codes: 1 = tests failed, 2 = interrupted (a collection error, e.g. an
# import that the mutation broke). Both mean the mutation was noticed; 0 means it was not;
# anything else (usage error, nothing collected) means the check itself is broken.
_CAUGHT_CODES = (1, 2)
_FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def apply(mutation: Mutation, root: str) -> None:
  """Applies `mutation` to the copy at `root`.

  Raises:
    ValueError: the anchor does not occur exactly once (tests/mutations_test.py keeps
      this from happening on the committed tree).
  """
  path = os.path.join(root, mutation.path)
  with open(path, encoding="utf-8") as f:
    source = f.read()
  count = source.count(mutation.anchor)
  if count != 1:
    raise ValueError(f"{mutation.path}: the anchor of mutation {mutation.name!r} occurs "
                     f"{count} times, expected once")
  with open(path, "w", encoding="utf-8") as f:
    f.write(source.replace(mutation.anchor, mutation.replacement))


def _tree_files(root: str) -> List[str]:
  """Tracked and untracked-but-not-ignored files of the checkout, relative to root."""
  listing = subprocess.run(
      ["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
      check=True, capture_output=True).stdout.decode()
  return [path for path in listing.split("\0")
          if path and os.path.isfile(os.path.join(root, path))]


def copy_tree(destination: str, files: Sequence[str]) -> None:
  for relative in files:
    target = os.path.join(destination, relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy2(os.path.join(ROOT, relative), target)


def _environment(root: str) -> dict:
  env = dict(os.environ)
  # The copy's csa_tf and tests come before the editable install; no bytecode, so a
  # mutation of the same length and mtime second cannot be masked by a stale .pyc.
  env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in
                                                [env.get("PYTHONPATH")] if p])
  env["PYTHONDONTWRITEBYTECODE"] = "1"
  return env


def run_tests(root: str, tests: Iterable[str], timeout: float) -> Tuple[int, str]:
  """Runs pytest on `tests` in the copy at `root`; returns (exit code, output)."""
  command = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:randomly",
             *tests]
  try:
    done = subprocess.run(command, cwd=root, env=_environment(root), timeout=timeout,
                          capture_output=True, text=True)
  except subprocess.TimeoutExpired:
    return -1, f"timed out after {timeout:.0f} s"
  return done.returncode, done.stdout + done.stderr


def _imports_copy(root: str) -> bool:
  """Whether `import csa_tf` in the copy finds the copy's package, not the install."""
  done = subprocess.run([sys.executable, "-c", "import csa_tf; print(csa_tf.__file__)"],
                        cwd=root, env=_environment(root), capture_output=True, text=True)
  return os.path.realpath(done.stdout.strip()).startswith(os.path.realpath(root))


def check_one(mutation: Mutation, files: Sequence[str], timeout: float) -> Tuple[str, str]:
  """Returns (verdict, detail) with verdict "caught", "SURVIVED" or "ERROR"."""
  with tempfile.TemporaryDirectory(prefix=f"mutation-{mutation.name}-") as root:
    copy_tree(root, files)
    apply(mutation, root)
    code, output = run_tests(root, mutation.tests, timeout)
  if code in _CAUGHT_CODES:
    failed = _FAILED_LINE.findall(output)
    return "caught", f"by {failed[0]}" if failed else "(collection error)"
  if code == 0:
    return "SURVIVED", f"{', '.join(mutation.tests)} all pass"
  tail = output.strip().splitlines()[-1:] or [""]
  return "ERROR", f"pytest exit {code}: {tail[0]}"


def baseline(mutations: Sequence[Mutation], files: Sequence[str],
             timeout: float) -> Optional[str]:
  """None when every named test passes unmutated, else why not."""
  tests = sorted({test for mutation in mutations for test in mutation.tests})
  with tempfile.TemporaryDirectory(prefix="mutation-baseline-") as root:
    copy_tree(root, files)
    if not _imports_copy(root):
      return "the copy's csa_tf is not the one imported (check PYTHONPATH handling)"
    code, output = run_tests(root, tests, timeout)
  if code != 0:
    return (f"the tests fail without any mutation (pytest exit {code}):\n"
            + "\n".join(output.strip().splitlines()[-15:]))
  return None


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tests.mutation_check",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--only", default="",
                      help="comma-separated mutation names (default: all)")
  parser.add_argument("--jobs", type=int, default=1, help="mutations checked at once")
  parser.add_argument("--timeout", type=float, default=1200,
                      help="seconds allowed for one pytest run")
  parser.add_argument("--list", action="store_true", help="list the mutations and exit")
  args = parser.parse_args(argv)

  mutations = list(MUTATIONS)
  if args.only:
    names = [name for name in args.only.split(",") if name]
    known = {m.name: m for m in MUTATIONS}
    unknown = [name for name in names if name not in known]
    if unknown:
      parser.error(f"--only: unknown mutation(s) {', '.join(unknown)}; "
                   "see --list")
    mutations = [known[name] for name in names]
  if args.list:
    for mutation in mutations:
      print(f"{mutation.name:42s} {mutation.path}: {mutation.why}")
    return 0
  if args.jobs < 1:
    parser.error("--jobs must be at least 1")

  start = time.monotonic()
  files = _tree_files(ROOT)
  print(f"baseline: running the {len(mutations)} mutations' tests unmutated ...",
        flush=True)
  problem = baseline(mutations, files, args.timeout)
  if problem:
    print(f"mutation_check: {problem}", file=sys.stderr)
    return 1
  counts = {"caught": 0, "SURVIVED": 0, "ERROR": 0}
  with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
    futures = [pool.submit(check_one, m, files, args.timeout) for m in mutations]
    for mutation, future in zip(mutations, futures):
      verdict, detail = future.result()
      counts[verdict] += 1
      print(f"{verdict:8s} {mutation.name}: {detail}", flush=True)
  minutes, seconds = divmod(int(time.monotonic() - start), 60)
  errors = f", {counts['ERROR']} could not be checked" if counts["ERROR"] else ""
  print(f"{counts['caught']} caught, {counts['SURVIVED']} survived{errors} "
        f"({minutes}m{seconds:02d}s)")
  return 0 if counts["caught"] == len(mutations) else 1


if __name__ == "__main__":
  sys.exit(main())
