#!/usr/bin/env python3
"""Read a journeyd archive file (encrypted Parquet) with pyarrow and the tenant key.

    python3 read_archive.py FILE TENANT_KEY_HEX [--csv]

The tenant key is what `journeyd keys export --tenant ID` prints. journeyd encrypts each file
with its own random key; the footer key metadata holds that key wrapped by the tenant key
(AES-256-GCM: 12-byte nonce, ciphertext, 16-byte tag; the master key id, e.g. "tenant-1", as
associated data), in the Parquet key-tools format that pyarrow's CryptoFactory understands. The
small KMS client below is all a reader needs. Prints the schema and the rows (or CSV).
"""
import base64
import sys

from cryptography.exceptions import InvalidTag
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class WrongKey(Exception):
    pass


class TenantKeyKms(pe.KmsClient):
    """Unwraps a file's key with the tenant key. Reading only: wrap_key is never called."""

    def __init__(self, tenant_key: bytes):
        super().__init__()
        self.tenant_key = tenant_key

    def wrap_key(self, key_bytes, master_key_identifier):
        raise NotImplementedError("this client only reads")

    def unwrap_key(self, wrapped_key, master_key_identifier):
        sealed = base64.b64decode(wrapped_key)
        nonce, body = sealed[:12], sealed[12:]
        try:
            return AESGCM(self.tenant_key).decrypt(nonce, body, master_key_identifier.encode())
        except InvalidTag:
            raise WrongKey(
                f"the file's key does not unwrap with this key: wrong key for {master_key_identifier}"
            ) from None


def read(path: str, tenant_key_hex: str):
    key = bytes.fromhex(tenant_key_hex.strip())
    factory = pe.CryptoFactory(lambda _config: TenantKeyKms(key))
    decryption = factory.file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration(cache_lifetime=None)
    )
    return pq.read_table(path, decryption_properties=decryption)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    try:
        table = read(sys.argv[1], sys.argv[2])
    except WrongKey as e:
        sys.exit(f"error: {e}")
    except Exception as e:  # pyarrow wraps the KMS client's error
        if "wrong key" in str(e):
            sys.exit(f"error: {str(e).splitlines()[0]}")
        raise
    if "--csv" in sys.argv[3:]:
        import pyarrow.csv as pc

        pc.write_csv(table, sys.stdout.buffer)
    else:
        print(table.schema)
        for row in table.to_pylist():
            print(row)


if __name__ == "__main__":
    main()
