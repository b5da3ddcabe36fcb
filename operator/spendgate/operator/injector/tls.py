"""The server's TLS context, reloaded in place: new handshakes use the new certificate at once.

Python's ssl loads a certificate chain only from files, so the PEMs pass through a private
temporary directory (0700, files removed straight after loading; in the chart /tmp is a
memory-backed emptyDir, so the key never touches a disk).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from spendgate.operator.injector import certificates


class ServingTLS:
    def __init__(self) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._loaded: tuple[bytes, bytes] | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def load(self, cert: bytes, key: bytes) -> bool:
        """Serve this pair from the next handshake on; False if it was already served."""
        if self._loaded == (cert, key):
            return False
        with tempfile.TemporaryDirectory(prefix="spendgate-injector-") as directory:
            cert_file, key_file = Path(directory) / "tls.crt", Path(directory) / "tls.key"
            for path, data in ((cert_file, cert), (key_file, key)):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "wb") as file:
                    file.write(data)
            self.context.load_cert_chain(cert_file, key_file)
        self._loaded = (cert, key)
        return True

    def expiry_timestamp(self) -> float | None:
        return certificates.not_after(self._loaded[0]).timestamp() if self._loaded else None
