"""SecretValue never shows its bytes, compares in constant time and refuses to be pickled."""

from __future__ import annotations

import pickle

import pytest

from reconciler import secret_value


def test_repr_str_and_format_are_redacted() -> None:
    value = secret_value.SecretValue(b"hunter2")
    for shown in (repr(value), str(value), f"{value}", f"{value!r}", f"{value:>20}"):
        assert "hunter2" not in shown
        assert "redacted" in shown
    assert value.reveal() == b"hunter2"
    assert len(value) == 7


def test_equality_by_value_and_unhashable() -> None:
    assert secret_value.SecretValue(b"a") == secret_value.SecretValue(b"a")
    assert secret_value.SecretValue(b"a") != secret_value.SecretValue(b"b")
    with pytest.raises(TypeError):
        hash(secret_value.SecretValue(b"a"))


def test_cannot_be_pickled() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret_value.SecretValue(b"hunter2"))


def test_holds_only_bytes() -> None:
    with pytest.raises(TypeError):
        secret_value.SecretValue("text")
