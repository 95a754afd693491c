"""The hand-written BUILD files cover every Python file and its first-party imports.

Bazel would not notice this drift by itself: the virtualenv has the project installed in
editable mode, so a module left out of a target's deps still imports from the source
tree, and a file with no target is simply never built. These checks read the BUILD files
as the Python they syntactically are (rule calls with keyword arguments; no Bazel
needed) and compare them with the tree and with the first-party modules each file
imports (or names as a string, for `python -m` subprocesses).
"""

import ast
import collections
import os
import re
from typing import Dict, List, NamedTuple, Optional, Set

import pytest

# Under `bazel test` this file is a runfiles symlink; the check reads the real tree.
_ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
# Not Bazel packages: the virtualenv, Bazel's local stand-in repositories and outputs,
# run outputs, and packaging leftovers. setup.py (the only root .py) belongs to pip.
_SKIP_DIRS = {".git", ".venv", "third_party", "runs", "build", "dist", "__pycache__"}
_PYTEST_MAIN = "tools/pytest_main.py"
_DOTTED_NAME = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+")


class Target(NamedTuple):
  label: str  # "//models:sine"
  kind: str  # "py_library", "py_binary", "py_test", "pytest_test" or "exports_files"
  srcs: List[str]  # repository-relative paths
  deps: List[str]  # absolute labels
  size: Optional[str]


def _absolute(package: str, label: str) -> str:
  """'//models' -> '//models:models', ':x' or 'x' -> '//<package>:x'."""
  if label.startswith("//"):
    return label if ":" in label else "%s:%s" % (label, label.rsplit("/", 1)[-1])
  return "//%s:%s" % (package, label.lstrip(":"))


def _path(package: str, src: str) -> str:
  """The repository-relative path of a source label."""
  package, name = _absolute(package, src)[2:].split(":")
  return os.path.join(package, name) if package else name


def _read_build_file(package: str, text: str) -> List[Target]:
  """Evaluates one BUILD file with the rules this project uses; returns its targets."""
  targets = []

  def rule(kind):
    def record(name, srcs=(), deps=(), size=None, **unused_attributes):
      srcs, deps = list(srcs), list(deps)
      if kind == "pytest_test":  # mirrors tools/pytest.bzl
        srcs = (srcs or [name + ".py"]) + ["//tools:pytest_main.py"]
        deps = deps + [":__init__", "//tests:conftest"]
        size = size or "small"
      targets.append(Target(_absolute(package, name), kind, [_path(package, s) for s in srcs],
                            [_absolute(package, d) for d in deps], size))
    return record

  def exports_files(files, **unused_attributes):
    targets.extend(Target(_absolute(package, f), "exports_files", [_path(package, f)], [], None)
                   for f in files)

  def ignored(*unused_args, **unused_kwargs):
    pass

  class Namespace(dict):
    def __missing__(self, key):
      raise NameError("%s/BUILD uses %r, which tests/bazel_targets_test.py does not model: "
                      "add it to the namespace there" % (package, key))

  namespace = Namespace(
      exports_files=exports_files,
      **{kind: rule(kind) for kind in ("py_library", "py_binary", "py_test", "pytest_test")},
      **{name: ignored for name in ("load", "package", "py_runtime", "py_runtime_pair",
                                    "toolchain")})
  exec(compile(text, os.path.join(package, "BUILD"), "exec"), {}, namespace)  # pylint: disable=exec-used
  return targets


def _walk():
  """Yields (package, file names) for every folder of the workspace that may hold code."""
  for directory, subdirs, files in os.walk(_ROOT):
    subdirs[:] = sorted(d for d in subdirs if d not in _SKIP_DIRS and not d.startswith("bazel-")
                        and not d.endswith(".egg-info"))
    yield os.path.relpath(directory, _ROOT).replace(os.sep, "/").lstrip("."), files


def _targets() -> Dict[str, Target]:
  targets = {}
  for package, files in _walk():
    if "BUILD" in files:
      with open(os.path.join(_ROOT, package, "BUILD")) as f:
        targets.update((t.label, t) for t in _read_build_file(package, f.read()))
  return targets


def _python_files() -> List[str]:
  return [os.path.join(package, name) for package, files in _walk() if package
          for name in sorted(files) if name.endswith(".py")]


def _first_party_packages() -> Set[str]:
  return {d for d in os.listdir(_ROOT) if os.path.isfile(os.path.join(_ROOT, d, "__init__.py"))}


def _module_file(module: str) -> Optional[str]:
  """'models.sine' -> 'models/sine.py' or 'models/sine/__init__.py', if it exists."""
  base = module.replace(".", "/")
  for path in (base + ".py", base + "/__init__.py"):
    if os.path.isfile(os.path.join(_ROOT, path)):
      return path
  return None


def _package_inits(path: str) -> List[str]:
  """The __init__.py files Python runs to import the module at `path`, outermost first."""
  parts = path.split("/")[:-1]
  inits = ["/".join(parts[:i] + ["__init__.py"]) for i in range(1, len(parts) + 1)]
  return [p for p in inits if os.path.isfile(os.path.join(_ROOT, p)) and p != path]


def _imported_files(path: str) -> Dict[str, str]:
  """First-party modules `path` uses: {module file: module name}.

  Counts `import` statements anywhere in the file, and string constants that are
  exactly a dotted first-party module name ("trainer.main"): modules started as
  `python -m <module>` subprocesses, which need the module in the runfiles too.
  """
  with open(os.path.join(_ROOT, path)) as f:
    tree = ast.parse(f.read(), path)
  first_party = _first_party_packages()
  imported = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      modules = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: resolve against the importing file's package
        package = path.split("/")[:-node.level]
        base = ".".join(package + ([base] if base else []))
      # `from pkg import name`: name is a submodule if it has a file, else pkg itself.
      modules = [base + "." + alias.name if _module_file(base + "." + alias.name) else base
                 for alias in node.names]
    elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
          and _DOTTED_NAME.fullmatch(node.value)):
      modules = [node.value]
    else:
      continue
    for module in modules:
      if module.split(".")[0] in first_party and _module_file(module):
        imported[_module_file(module)] = module
  return imported


def _closure(targets: Dict[str, Target], label: str) -> Set[str]:
  """Source files in the runfiles of `label`: its srcs and those of all its deps."""
  seen, stack, files = set(), [label], set()
  while stack:
    current = stack.pop()
    if current in seen or current not in targets:
      continue
    seen.add(current)
    files.update(targets[current].srcs)
    stack.extend(targets[current].deps)
  return files


def _marks_large(path: str) -> bool:
  """Whether the test file uses `pytest.mark.large` (as a decorator or `pytestmark`)."""
  with open(os.path.join(_ROOT, path)) as f:
    tree = ast.parse(f.read(), path)
  return any(isinstance(node, ast.Attribute) and node.attr == "large"
             and isinstance(node.value, ast.Attribute) and node.value.attr == "mark"
             for node in ast.walk(tree))


@pytest.fixture(scope="module")
def targets():
  return _targets()


def test_every_python_file_has_a_target(targets):
  covered = {src for target in targets.values() for src in target.srcs}
  missing = [path for path in _python_files() if path not in covered]
  assert not missing, (
      "these Python files have no Bazel target; add one to the BUILD file beside each "
      "(py_library per module, pytest_test per *_test.py, see docs/bazel.md): %s" % missing)


def test_every_source_and_dep_exists(targets):
  problems = ["%s lists missing file %s" % (t.label, src) for t in targets.values()
              for src in t.srcs if not os.path.isfile(os.path.join(_ROOT, src))]
  problems += ["%s depends on undefined target %s" % (t.label, dep) for t in targets.values()
               for dep in t.deps if dep not in targets]
  assert not problems, problems


def test_direct_deps_provide_every_first_party_import(targets):
  problems = []
  for target in targets.values():
    if target.kind == "exports_files":
      continue
    direct = set(target.srcs).union(*(targets[d].srcs for d in target.deps if d in targets))
    for src in target.srcs:
      if src == _PYTEST_MAIN or not os.path.isfile(os.path.join(_ROOT, src)):
        continue
      problems += ["%s imports %s (%s) but no direct dep of %s has it in srcs"
                   % (src, module, module_file, target.label)
                   for module_file, module in sorted(_imported_files(src).items())
                   if module_file not in direct]
  assert not problems, "\n".join(problems)


def test_runnable_targets_bring_the_package_init_files(targets):
  # Python runs every enclosing package's __init__.py before a module (ours set
  # TF_USE_LEGACY_KERAS); with --incompatible_default_to_explicit_init_py Bazel adds no
  # empty ones, so a binary or test must bring them through its deps. Checked on the
  # runnable targets only: a package __init__ that imports its own modules (readers/)
  # cannot be a dep of those modules' libraries without a cycle.
  problems = []
  for target in targets.values():
    if target.kind in ("py_binary", "py_test", "pytest_test"):
      runfiles = _closure(targets, target.label)
      missing = {init for src in runfiles for init in _package_inits(src)} - runfiles
      problems += ["%s runs modules of a package whose %s is not in its deps' closure: "
                   "add the package's :__init__ target" % (target.label, init)
                   for init in sorted(missing)]
  assert not problems, "\n".join(problems)


def test_tests_marked_large_are_large_targets(targets):
  sizes = collections.defaultdict(set)
  for target in targets.values():
    if target.kind in ("py_test", "pytest_test"):
      for src in target.srcs:
        sizes[src].add(target.size or "medium")
  problems = ["%s has @pytest.mark.large tests, its target's size is %s"
              % (src, sorted(target_sizes)) for src, target_sizes in sorted(sizes.items())
              if src != _PYTEST_MAIN and _marks_large(src) and target_sizes != {"large"}]
  assert not problems, "multi-process tests need size = \"large\": %s" % problems


def test_read_build_file_models_the_pytest_macro():
  # One hand-checkable case for the parser the checks above rely on.
  text = ('load("//tools:pytest.bzl", "pytest_test")\n'
          'pytest_test(name = "sine_test", deps = ["//models:sine", "//models/layers"])\n')
  (target,) = _read_build_file("tests/models", text)
  assert target == Target(
      label="//tests/models:sine_test", kind="pytest_test",
      srcs=["tests/models/sine_test.py", "tools/pytest_main.py"],
      deps=["//models:sine", "//models/layers:layers", "//tests/models:__init__",
            "//tests:conftest"],
      size="small")
