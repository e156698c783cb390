"""The reloading TLS context: TLS 1.2 floor, rotation, and half-written files."""

from __future__ import annotations

import contextlib
import os
import ssl
import time
from pathlib import Path

from cryptography import x509

from tests.harness import pki
from webhook import serve


def _serial(context: ssl.SSLContext, ca: pki.CertificateAuthority) -> int:
    """Handshake in memory against `context`; return the served certificate's serial."""
    client = ssl.create_default_context(cadata=ca.cert_pem.decode())
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    cli = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    srv = context.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (cli, srv):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = cli.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _write(pair: pki.KeyPair, directory: Path) -> tuple[Path, Path]:
    return pair.write(directory, "tls")


def test_minimum_version_is_tls_1_2(tmp_path: Path) -> None:
    """The server context never negotiates below TLS 1.2."""
    ca = pki.CertificateAuthority("ca")
    crt, key = _write(ca.serving(["127.0.0.1"]), tmp_path)
    context = serve.ReloadingTLS(crt, key, check_every=60).context()
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_rotation_is_picked_up_after_the_check_interval(tmp_path: Path) -> None:
    """New files are served once the interval has passed; the old context stays until then."""
    ca = pki.CertificateAuthority("ca")
    first, second = ca.serving(["127.0.0.1"]), ca.serving(["127.0.0.1"])
    crt, key = _write(first, tmp_path)
    tls = serve.ReloadingTLS(crt, key, check_every=0.2)
    old = _serial(tls.context(), ca)
    new_dir = tmp_path / "new"
    new_dir.mkdir()
    new_crt, new_key = _write(second, new_dir)
    os.replace(new_key, key)
    os.replace(new_crt, crt)
    time.sleep(0.25)
    new = _serial(tls.context(), ca)
    assert new != old
    assert new == x509.load_pem_x509_certificate(second.cert_pem).serial_number


def test_half_written_pair_keeps_the_previous_context(tmp_path: Path) -> None:
    """A new certificate whose key has not arrived yet does not break serving."""
    ca = pki.CertificateAuthority("ca")
    first, second = ca.serving(["127.0.0.1"]), ca.serving(["127.0.0.1"])
    crt, key = _write(first, tmp_path)
    tls = serve.ReloadingTLS(crt, key, check_every=0.0)
    before = tls.context()
    crt.write_bytes(second.cert_pem)  # the key still belongs to `first`
    assert tls.context() is before
    assert (
        _serial(tls.context(), ca) == x509.load_pem_x509_certificate(first.cert_pem).serial_number
    )
    key.write_bytes(second.key_pem)  # now the pair is whole again
    assert (
        _serial(tls.context(), ca) == x509.load_pem_x509_certificate(second.cert_pem).serial_number
    )
