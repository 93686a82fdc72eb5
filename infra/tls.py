"""A private certificate authority for the local broker's secure mode, made with openssl.

``make_authority`` writes a CA; ``issue`` a key and certificate it signs (for 127.0.0.1 and
localhost), as a PKCS#12 keystore for the JVM and as PEM files for Python clients. The
files stay under the broker's home, readable by their owner only.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class TlsError(RuntimeError):
    """Certificates could not be made; the message says why."""


@dataclass(frozen=True)
class Issued:
    name: str
    key_pem: Path         # unencrypted private key (owner-readable only), for Python clients
    cert_pem: Path
    keystore_p12: Path    # key + certificate for the JVM
    password: str         # of the keystore


def _openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise TlsError("openssl is not on PATH; it makes the local broker's certificates (apt-get install openssl)")
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise TlsError(f"openssl {args[0]} failed: {proc.stderr.strip()[-500:]}")


def make_authority(directory: Path, days: int = 825) -> Path:
    """A self-signed CA in ``directory`` (ca.key, ca.pem), made once; returns ca.pem."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, ca_pem = directory / "ca.key", directory / "ca.pem"
    if not ca_pem.exists():
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_pem),
                 "-days", str(days), "-subj", "/CN=tessera-local-ca")
        os.chmod(ca_key, 0o600)
    return ca_pem


def issue(directory: Path, name: str, days: int = 825) -> Issued:
    """A key and a certificate with CN=``name`` for 127.0.0.1 and localhost, signed by the CA
    in ``directory``; made once."""
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    p12, pw_file = directory / f"{name}.p12", directory / f"{name}.p12.password"
    if not p12.exists():
        password = secrets.token_urlsafe(18)
        ext = directory / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(directory / "ca.pem"), "-CAkey", str(directory / "ca.key"),
                 "-CAcreateserial", "-out", str(cert), "-days", str(days), "-extfile", str(ext))
        # PKCS#12 for the JVM: its PEM keystores need PBES2-encrypted keys, which Java 17
        # cannot read.
        _openssl("pkcs12", "-export", "-in", str(cert), "-inkey", str(key), "-out", str(p12), "-name", name,
                 "-passout", f"pass:{password}")
        pw_file.write_text(password)
        for f in (key, p12, pw_file):
            os.chmod(f, 0o600)
    return Issued(name, key, cert, p12, pw_file.read_text())
