"""Signed bundles: an HMAC-SHA256 of the manifest under a key kept outside the bundle.

``manifest.sha256`` catches damage, but anyone who edits the manifest (its metrics, say) can
recompute it. A signature needs the key. The manifest hashes every other file, so signing the
manifest signs the whole bundle.

Keys come from ``EMBRECALL_BUNDLE_KEYS`` (comma-separated) or ``EMBRECALL_BUNDLE_KEY_FILE`` (one
key per line). The first key signs; every listed key is accepted, so a key is rotated by putting
the new one first and dropping the old one once every kept bundle is signed again
(``embrecall sign``). With no key configured, bundles are neither signed nor checked. With one,
``publish``, ``rollback`` and ``serve`` refuse a bundle that is unsigned or signed under another
key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from embrecall.errors import BundleError, ConfigError

__all__ = ["SIGNATURE", "bundle_keys", "sign_manifest", "check_signature"]

SIGNATURE = "manifest.sig"
KEYS_VARIABLE = "EMBRECALL_BUNDLE_KEYS"
KEY_FILE_VARIABLE = "EMBRECALL_BUNDLE_KEY_FILE"
_MIN_KEY = 16  # characters: a shorter key is guessable


def bundle_keys() -> list[bytes]:
    """The configured keys, the signing one first; none when signing is off."""
    listed = os.environ.get(KEYS_VARIABLE, "")
    file = os.environ.get(KEY_FILE_VARIABLE)
    if file:
        try:
            listed = Path(file).read_text(encoding="utf-8").replace("\n", ",")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{KEY_FILE_VARIABLE}={file}: cannot read the key file ({err})") from None
    keys = [k.strip() for k in listed.split(",") if k.strip()]
    short = [i for i, k in enumerate(keys) if len(k) < _MIN_KEY]
    if short:
        raise ConfigError(f"bundle key {short[0] + 1} is shorter than {_MIN_KEY} characters; use a long random key")
    return [k.encode() for k in keys]


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"embrecall-key-id" + key).hexdigest()[:12]


def _mac(key: bytes, manifest: bytes) -> str:
    return hmac.new(key, manifest, hashlib.sha256).hexdigest()


def sign_manifest(folder: Path, keys: list[bytes] | None = None) -> bool:
    """Write ``folder``'s signature under the first configured key; False when none is."""
    keys = bundle_keys() if keys is None else keys
    if not keys:
        return False
    manifest = (folder / "manifest.json").read_bytes()
    signature = {"key_id": _key_id(keys[0]), "hmac_sha256": _mac(keys[0], manifest)}
    (folder / SIGNATURE).write_text(json.dumps(signature) + "\n")
    return True


def check_signature(folder: Path, manifest: bytes) -> None:
    """Refuse ``folder`` unless a configured key signed ``manifest`` (its bytes as read); with
    no key configured, accept it."""
    keys = bundle_keys()
    if not keys:
        return
    path = folder / SIGNATURE
    if not path.is_file():
        raise BundleError(
            f"{folder}: the bundle is not signed, and bundle keys are configured ({KEYS_VARIABLE}); "
            "sign it with `embrecall sign` where the key is kept, or train it there"
        )
    try:
        signature = json.loads(path.read_text(encoding="utf-8"))
        given = str(signature["hmac_sha256"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise BundleError(f"{path} is not a signature written by embrecall") from None
    if not any(hmac.compare_digest(_mac(key, manifest), given) for key in keys):
        raise BundleError(
            f"{folder}: the signature does not match the manifest under any configured key: the "
            "manifest was changed after signing, or it was signed with a key not configured here"
        )
