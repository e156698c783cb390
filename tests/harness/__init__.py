"""Test harness: the real control plane, its PKI, and helpers shared by the test suites."""
