"""`make demo`: GitWarden's whole trust chain on one machine, step by step.

Owns the demo: it starts a local control plane, OPA, the webhook over TLS and the reconciler
against a repository it generates and signs with throwaway keys, then runs the seven steps of
the user's guide and reports PASS or FAIL for each. It reuses the test harness
(`tests/harness`: control plane, services, signed repositories) by import so both share one
source, and it must never fake a result: a step that cannot be shown reports FAIL with why.
"""
