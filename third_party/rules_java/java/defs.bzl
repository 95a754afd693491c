"""Offline @rules_java: forwards the symbols @bazel_tools loads to Bazel 4's native rules.

Bazel 4.2.3 would otherwise download rules_java from GitHub before any build (see
third_party/README.md); this project builds no Java of its own.
"""

java_binary = native.java_binary
java_import = native.java_import
java_library = native.java_library
java_proto_library = native.java_proto_library
java_runtime = native.java_runtime
java_toolchain = native.java_toolchain
