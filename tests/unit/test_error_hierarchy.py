"""Every reconciler error says what the loop does next: exactly one of Transient and Stalled."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import reconciler
from reconciler import errors


def all_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(reconciler.__path__, prefix="reconciler.")]


def error_classes() -> list[type[errors.ReconcileError]]:
    found: dict[str, type[errors.ReconcileError]] = {}
    for name in all_modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, errors.ReconcileError) and value.__module__ == name:
                found[f"{name}.{value.__qualname__}"] = value
    return list(found.values())


def test_every_error_class_is_exactly_one_of_transient_and_stalled() -> None:
    classes = error_classes()
    wrong = [
        cls.__qualname__
        for cls in classes
        if issubclass(cls, errors.Transient) == issubclass(cls, errors.Stalled)
        and cls not in (errors.ReconcileError, errors.Transient, errors.Stalled)
    ]
    assert wrong == []


def test_the_walk_sees_the_stages_errors() -> None:
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in error_classes()}
    # A walk that missed whole modules would pass the test above vacuously.
    assert {
        "reconciler.load.LoadError",
        "reconciler.plan.NothingToApply",
        "reconciler.gitsource.FetchError",
        "reconciler.trustbase.StoredForcePush",
        "reconciler.config.ConfigError",
        "reconciler.sealed.errors.RevisionRejected",
    } <= names
    assert len(all_modules()) >= 20


# Format libraries' own errors, caught and translated by the stage that uses them (verify and
# the sealed-secret object rules), none of which reaches the loop; and the cluster adapter's
# mixin base, whose every concrete error is also Transient or Stalled (checked below).
TRANSLATED = {
    "reconciler.sealed.wire.WireError",
    "reconciler.signatures.rejections.SignatureRejected",
    "reconciler.cluster_errors.ClusterError",
}


def test_every_concrete_cluster_error_picked_a_side() -> None:
    from reconciler import cluster_errors

    subclasses = [
        cls
        for _, cls in inspect.getmembers(cluster_errors, inspect.isclass)
        if issubclass(cls, cluster_errors.ClusterError) and cls is not cluster_errors.ClusterError
    ]
    assert subclasses
    assert all(issubclass(cls, errors.Transient | errors.Stalled) for cls in subclasses)


def test_only_translated_format_errors_live_outside_the_hierarchy() -> None:
    outside = set()
    for name in all_modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(value, Exception)
                and value.__module__ == name
                and not issubclass(value, errors.ReconcileError | ValueError)
            ):
                outside.add(f"{name}.{value.__qualname__}")
    assert outside == TRANSLATED
