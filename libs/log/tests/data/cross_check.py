"""Independent reference for the note and cosignature vectors in tests/note.rs.

Written from the C2SP texts (signed-note, tlog-checkpoint, tlog-cosignature) with Python's
`cryptography` package, sharing no code with the Rust crate. Run: python3 cross_check.py
"""
import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def key(seed_byte):
    sk = Ed25519PrivateKey.from_private_bytes(bytes([seed_byte]) * 32)
    pk = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return sk, pk


def key_id(name, sig_type, pk):
    # key ID = SHA-256(key name || 0x0A || signature type || public key)[:4]
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + pk).digest()[:4]


def vkey(name, sig_type, pk):
    return f"{name}+{key_id(name, sig_type, pk).hex()}+{base64.b64encode(bytes([sig_type]) + pk).decode()}"


def line(name, raw):
    return "\u2014 " + name + " " + base64.b64encode(raw).decode()


log_name = "example.com/openexec/receipts"
log_sk, log_pk = key(0x11)
body = f"{log_name}\n42\n{base64.b64encode(hashlib.sha256(b'root').digest()).decode()}\n"

log_line = line(log_name, key_id(log_name, 0x01, log_pk) + log_sk.sign(body.encode()))
note = body + "\n" + log_line + "\n"

w_name = "witness.example/w1"
w_sk, w_pk = key(0x22)
ts = 1679315147
msg = f"cosignature/v1\ntime {ts}\n".encode() + body.encode()
w_line = line(w_name, key_id(w_name, 0x04, w_pk) + ts.to_bytes(8, "big") + w_sk.sign(msg))

print("LOG_VKEY", vkey(log_name, 0x01, log_pk))
print("BODY", repr(body))
print("NOTE", repr(note))
print("WITNESS_VKEY", vkey(w_name, 0x04, w_pk))
print("COSIG_LINE", w_line)
