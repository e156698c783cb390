"""A git-over-SSH server on 127.0.0.1 for fetch tests, driven by the real OpenSSH client.

Owns an asyncssh server (on its own thread and event loop) that accepts one client key and
runs `git-upload-pack` for exec requests naming a repository under its root, and the
known_hosts line for its host key. The client side is the real `ssh` that `git` starts, so host
key checking is OpenSSH's own. Nothing else is served: other commands are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncssh

from tests.harness.controlplane import LOOPBACK


class _GitServer(asyncssh.SSHServer):
    def __init__(self, client_key: asyncssh.SSHKey) -> None:
        self._client_key = client_key

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return bool(key.public_data == self._client_key.public_data)


async def _serve_git(process: asyncssh.SSHServerProcess, root: Path) -> None:  # type: ignore[type-arg]
    argv = shlex.split(process.command or "")
    if len(argv) != 2 or argv[0] != "git-upload-pack":
        process.stderr.write(f"refused: {process.command!r}\n")
        process.exit(1)
        return
    repo = (root / argv[1].lstrip("/")).resolve()
    if root.resolve() not in repo.parents and repo != root.resolve():
        process.exit(1)
        return
    env = {"PATH": "/usr/bin:/bin"}
    if process.env.get("GIT_PROTOCOL"):
        env["GIT_PROTOCOL"] = str(process.env["GIT_PROTOCOL"])
    child = await asyncio.create_subprocess_exec(
        "git-upload-pack",
        str(repo),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stderr is not None

    async def upload() -> None:
        # The client's requests to upload-pack; EOF when the client has sent everything.
        while data := await process.stdin.read(65536):
            child.stdin.write(data)
            await child.stdin.drain()
        child.stdin.close()

    async def download(source: asyncio.StreamReader, sink: asyncssh.SSHWriter) -> None:  # type: ignore[type-arg]
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()

    sender = asyncio.ensure_future(upload())
    await asyncio.gather(
        download(child.stdout, process.stdout), download(child.stderr, process.stderr)
    )
    status = await child.wait()
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError, BrokenPipeError, ConnectionResetError):
        await sender
    process.exit(status)


class SshGitServer:
    """Serves repositories under `root` as ssh://git@127.0.0.1:<port>/<name>."""

    def __init__(self, root: Path, client_key: asyncssh.SSHKey) -> None:
        self.root = root
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self._client_key = client_key
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ssh-git", daemon=True)
        self.port = 0
        self._server: asyncssh.SSHAcceptor | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncssh.create_server(
                lambda: _GitServer(self._client_key),
                LOOPBACK,
                0,
                server_host_keys=[self.host_key],
                process_factory=lambda p: _serve_git(p, self.root),
                encoding=None,
                allow_scp=False,
                agent_forwarding=False,
                x11_forwarding=False,
            )
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        """Start listening; returns once the port is known."""
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("ssh git server did not start")

    def stop(self) -> None:
        """Close the server and its loop."""

        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def url(self, name: str) -> str:
        """The ssh URL of repository `name` under the root."""
        return f"ssh://git@{LOOPBACK}:{self.port}/{name}"

    def known_hosts_line(self, key: asyncssh.SSHKey | None = None) -> str:
        """A known_hosts entry for this server (or claiming `key` is its host key)."""
        public = (key or self.host_key).export_public_key("openssh").decode().strip()
        return f"[{LOOPBACK}]:{self.port} {public}\n"


@contextmanager
def ssh_git_server(root: Path, client_key: asyncssh.SSHKey) -> Iterator[SshGitServer]:
    """A running server for the duration of the block."""
    server = SshGitServer(root, client_key)
    server.start()
    try:
        yield server
    finally:
        server.stop()
