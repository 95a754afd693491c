"""Offline @rules_cc: forwards the symbols @bazel_tools loads to Bazel 4's native rules.

Bazel 4.2.3 would otherwise download rules_cc from GitHub before any build (see
third_party/README.md); this project builds no C++ of its own.
"""

cc_binary = native.cc_binary
cc_library = native.cc_library
cc_proto_library = native.cc_proto_library
cc_test = native.cc_test
cc_toolchain = native.cc_toolchain
cc_toolchain_suite = native.cc_toolchain_suite
objc_library = native.objc_library
