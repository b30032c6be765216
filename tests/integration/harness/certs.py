# SPDX-License-Identifier: Apache-2.0
"""A throwaway PKI made with the `openssl` command-line tool.

make_pki() writes, into a fresh temporary directory:
  ca.pem     -- a self-signed CA certificate (EC P-256, CA:TRUE)
  ca.key     -- its key
  cert.pem   -- the chain: a server certificate for "localhost"
                (SAN DNS:localhost, IP:127.0.0.1, IP:127.0.0.2) followed by ca.pem
  key.pem    -- the server certificate's private key (PKCS#8, unencrypted)
The server certificate also names 127.0.0.2 because Dovecot can only be made to
require TLS when it listens on an address other than the client's (see dovecot.py).
"""

from __future__ import annotations

import dataclasses
import os
import ssl
import subprocess
from typing import Sequence

from . import tempdirs

DEFAULT_SANS = ("DNS:localhost", "IP:127.0.0.1", "IP:127.0.0.2")


@dataclasses.dataclass(frozen=True)
class Pki:
    directory: str
    ca: str       # CA certificate, PEM
    ca_key: str   # CA private key, PEM
    cert: str     # server certificate chain (leaf then CA), PEM
    key: str      # server private key, PEM

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA and checks host names."""
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def issue(self, name: str, sans: Sequence[str] = DEFAULT_SANS, days: int = 2) -> tuple[str, str]:
        """Issues another server certificate from this CA; returns (chain path, key path)."""
        return _issue(self.directory, self.ca, self.ca_key, name, sans, days)

    def cleanup(self) -> None:
        tempdirs.remove(self.directory)


def _run(args: Sequence[str], cwd: str) -> None:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")


def _ec_key(path: str, cwd: str) -> None:
    _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path], cwd)


def _issue(directory: str, ca: str, ca_key: str, name: str, sans: Sequence[str], days: int) -> tuple[str, str]:
    key = os.path.join(directory, f"{name}.key.pem")
    csr = os.path.join(directory, f"{name}.csr")
    leaf = os.path.join(directory, f"{name}.leaf.pem")
    chain = os.path.join(directory, f"{name}.pem")
    ext = os.path.join(directory, f"{name}.ext")
    with open(ext, "w") as f:
        f.write(
            f"subjectAltName = {', '.join(sans)}\n"
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid, issuer\n"
        )
    _ec_key(key, directory)
    _run(["openssl", "req", "-new", "-key", key, "-subj", "/CN=localhost/O=popbridge tests", "-out", csr], directory)
    _run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
          "-days", str(days), "-sha256", "-extfile", ext, "-out", leaf], directory)
    with open(chain, "wb") as out:
        for part in (leaf, ca):
            with open(part, "rb") as f:
                out.write(f.read())
    os.chmod(key, 0o644)  # read by Dovecot's config process and the gateway; throwaway key
    return chain, key


def make_pki(days: int = 2) -> Pki:
    directory = tempdirs.make("pki")
    try:
        ca_key = os.path.join(directory, "ca.key")
        ca = os.path.join(directory, "ca.pem")
        _ec_key(ca_key, directory)
        _run(["openssl", "req", "-x509", "-new", "-key", ca_key, "-sha256", "-days", str(days),
              "-subj", "/CN=popbridge test CA",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign",
              "-out", ca], directory)
        chain, key = _issue(directory, ca, ca_key, "server", DEFAULT_SANS, days)
        cert = os.path.join(directory, "cert.pem")
        os.replace(chain, cert)
        os.replace(key, os.path.join(directory, "key.pem"))
        os.chmod(directory, 0o755)
        return Pki(directory=directory, ca=ca, ca_key=ca_key, cert=cert, key=os.path.join(directory, "key.pem"))
    except BaseException:
        tempdirs.remove(directory)
        raise
