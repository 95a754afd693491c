"""pytest_test: one py_test per pytest file (`tests/<package>/<module>_test.py`).

    load("//tools:pytest.bzl", "pytest_test")

    pytest_test(
        name = "sine_test",            # runs sine_test.py
        deps = ["//models:sine"],
    )

The test runs tools/pytest_main.py on its file with the repository's pytest.ini and
tests/conftest.py, on the virtualenv interpreter of the toolchain in tools/BUILD. It
depends on its package's `:__init__` library (every tests/ folder is a Python package,
and its BUILD file declares `py_library(name = "__init__", srcs = ["__init__.py"], ...)`).
"""

def pytest_test(name, srcs = None, deps = [], data = [], size = "small", **kwargs):
    """A py_test that runs pytest on `srcs` (default: `<name>.py`).

    Args:
      name: target name, by convention the test file's name without `.py`.
      srcs: the pytest file(s); default `[name + ".py"]`.
      deps: py_library targets the test imports (its package's `:__init__` is added).
      data: files the test reads at run time.
      size: Bazel test size: "small" by default, "large" for multi-process tests.
      **kwargs: passed on to py_test (tags, shard_count, timeout, ...).
    """
    srcs = srcs or [name + ".py"]
    native.py_test(
        name = name,
        srcs = srcs + ["//tools:pytest_main.py"],
        main = "//tools:pytest_main.py",
        args = ["$(rootpath %s)" % src for src in srcs],
        deps = deps + [":__init__", "//tests:conftest"],
        data = data + ["//:pytest.ini"],
        size = size,
        **kwargs
    )
