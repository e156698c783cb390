"""Signature checking on raw bytes: split git objects, verify SSHSIG and OpenPGP, read trust files.

This package works on bytes and parsed trust configuration only. It must not read repositories,
start processes, talk to a cluster or log object contents; the verify stage composes it.
"""
