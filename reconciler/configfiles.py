"""The configuration and trust files of a running reconciler: their digest, and re-reading them.

Owns the second half of the loop's stall key (a digest of the configuration file and every
trust file it names: allowed_signers, the OpenPGP keys, the commit policy and its data), and
`reloader`, which re-reads them for the next pass when the digest changed (a stalled revision
may be fixed by a new key or policy instead of a new commit). Must not run a pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from collections.abc import Callable

from reconciler import config, trustfiles, wiring


def digest(config_path: pathlib.Path, settings: config.ReconcilerConfig) -> str:
    """A digest of the configuration file and every trust file it names (the stall key's half).

    A missing or unreadable file hashes as such: its coming back is a change too.
    """
    trust = settings.trust
    paths = [config_path, trust.allowed_signers, trust.commit_policy_data]
    for directory, pattern in ((trust.openpgp_keys, "*.asc"), (trust.commit_policy_dir, "**/*")):
        if directory is not None:
            try:
                paths += sorted(p for p in directory.glob(pattern) if p.is_file())
            except OSError:
                paths.append(directory)
    digest = hashlib.sha256()
    for path in paths:
        if path is None:
            continue
        digest.update(str(path).encode() + b"\0")
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            digest.update(b"unreadable")
    return digest.hexdigest()


def reloader(
    config_path: pathlib.Path, process: wiring.Process
) -> Callable[[], tuple[config.ReconcilerConfig, wiring.Process]]:
    """Re-read the settings and trust files for the next pass.

    What a pass reads (source, paths, trust, commit policy) takes effect at once; the cluster
    connection, apply settings, Lease and endpoints stay as they were until a restart.
    """

    def reload() -> tuple[config.ReconcilerConfig, wiring.Process]:
        settings = config.load(config_path)
        ports = dataclasses.replace(
            process.ports,
            source=wiring.GitSource(settings.source),
            trust=trustfiles.load(settings.trust),
            commit_policy=trustfiles.commit_policy(settings.trust),
        )
        return settings, dataclasses.replace(process, ports=ports)

    return reload
