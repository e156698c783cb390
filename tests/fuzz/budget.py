"""How much each fuzz target generates: a small default for `make test`, a long profile.

Owns the two hypothesis profiles and the example counts per target. `GITWARDEN_FUZZ=long`
(what `make test-long` sets) selects the long one; anything else, or nothing, the default. The
counts are per target because one example costs very different amounts: an AdmissionReview is
a Flask request and an OPA query (~1 ms), a SealedSecret an RSA decryption, a CLI run a child
Python. Nothing here reads the environment after import.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

LONG = os.environ.get("GITWARDEN_FUZZ", "") == "long"

# (default, long): the default set stays well under a minute on a loaded two-core machine.
_COUNTS = {
    "admission": (250, 100_000),
    "admission_parent": (60, 10_000),
    "manifests": (200, 20_000),
    "sealed": (150, 20_000),
    "commits": (400, 50_000),
    "cli_in_process": (40, 5_000),
    "cli_child": (3, 100),
}

_COMMON = {
    "deadline": None,  # a loaded CI machine must not turn slowness into a failure
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,  # a failure prints the @reproduce_failure line to replay it
}

settings.register_profile("gitwarden-default", **_COMMON)
# The long run keeps no example database: each run explores fresh inputs.
settings.register_profile("gitwarden-long", database=None, **_COMMON)


def profile() -> str:
    """The name of the selected profile."""
    return "gitwarden-long" if LONG else "gitwarden-default"


def examples(target: str) -> settings:
    """Hypothesis settings for one target: the selected profile with the target's count."""
    default, long = _COUNTS[target]
    return settings(settings.get_profile(profile()), max_examples=long if LONG else default)
