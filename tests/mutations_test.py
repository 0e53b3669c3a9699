"""Keeps tests/mutations.py in step with the code it mutates (runs in the default suite).

The mutation check itself (`python -m tests.mutation_check`) is opt-in; these tests make
sure it cannot go stale: every anchor still occurs exactly once, each mutated file still
compiles, and every test it names exists.
"""
import ast
import os

import pytest

from tests import mutation_check
from tests.mutations import MUTATIONS, Mutation
from tests.helpers import ROOT


def _source(path):
  with open(os.path.join(ROOT, path), encoding="utf-8") as f:
    return f.read()


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_anchor_occurs_once_and_the_mutant_compiles(mutation):
  source = _source(mutation.path)
  assert source.count(mutation.anchor) == 1, (
      f"{mutation.path} no longer holds the anchor of {mutation.name!r} exactly once: "
      "move the anchor in tests/mutations.py to the rewritten code")
  assert mutation.replacement != mutation.anchor
  mutant = source.replace(mutation.anchor, mutation.replacement)
  assert mutant != source
  compile(mutant, mutation.path, "exec")


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_named_tests_exist(mutation):
  assert mutation.tests
  for test in mutation.tests:
    path, _, node = test.partition("::")
    assert os.path.isfile(os.path.join(ROOT, path)), f"{mutation.name}: no file {path}"
    if node:
      functions = {n.name for n in ast.walk(ast.parse(_source(path)))
                   if isinstance(n, ast.FunctionDef)}
      assert node.split("[")[0].split("::")[-1] in functions, (
          f"{mutation.name}: {path} has no test {node}")


def test_the_list_covers_the_planted_bugs_and_enough_others():
  names = [m.name for m in MUTATIONS]
  assert len(names) == len(set(names))
  assert len(names) >= 12
  # The six one-line bugs that once survived the suite (issue 11).
  assert {"affinity_class_specific", "lambda_dropped", "bn_routed_to_first_modality",
          "crop_centre_shifted", "dice_eps_1e-6", "dice_eps_0"} <= set(names)


def test_apply_changes_only_the_anchor_and_refuses_an_ambiguous_one(tmp_path):
  path = tmp_path / "pkg" / "mod.py"
  path.parent.mkdir()
  path.write_text("a = 1\nb = 2\nc = 2\n")
  mutation_check.apply(Mutation("m", "pkg/mod.py", "a = 1", "a = 3", ("t",), ""),
                       str(tmp_path))
  assert path.read_text() == "a = 3\nb = 2\nc = 2\n"
  with pytest.raises(ValueError, match="occurs 2 times"):
    mutation_check.apply(Mutation("m", "pkg/mod.py", "= 2", "= 4", ("t",), ""),
                         str(tmp_path))
  with pytest.raises(ValueError, match="occurs 0 times"):
    mutation_check.apply(Mutation("m", "pkg/mod.py", "zzz", "y", ("t",), ""),
                         str(tmp_path))
