"""The stall key's file half: the digest moves with the configuration and every trust file."""

from __future__ import annotations

import pathlib

from reconciler import config, configfiles


def test_the_digest_changes_with_any_trust_file_and_only_then(tmp_path: pathlib.Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "alice.asc").write_text("alice")
    (tmp_path / "allowed_signers").write_text("bob ssh-ed25519 AAAA")
    (tmp_path / "reconciler.yaml").write_text(
        f"source: {{url: x}}\ntrust: {{anchor: {'a' * 40}, allowed_signers: allowed_signers,"
        " openpgp_keys: keys}\n"
    )
    path = tmp_path / "reconciler.yaml"
    settings = config.load(path)
    first = configfiles.digest(path, settings)
    assert configfiles.digest(path, settings) == first
    seen = {first}
    for change in (
        lambda: (tmp_path / "allowed_signers").write_text("bob ssh-ed25519 BBBB"),
        lambda: (keys / "carol.asc").write_text("carol"),
        (keys / "alice.asc").unlink,
        lambda: path.write_text(path.read_text() + "# a comment\n"),
    ):
        change()
        now = configfiles.digest(path, settings)
        assert now not in seen
        seen.add(now)
    (keys / "notes.txt").write_text("not a key")  # not read as a key: not in the digest
    assert configfiles.digest(path, settings) in seen
