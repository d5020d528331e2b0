"""Kernel tests (a package, so its conftest is tests.kernels.conftest, not a second top-level conftest)."""
