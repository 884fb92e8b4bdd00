"""Custody of the org signing key: never where the SuperLink's user can reach it.

The org signing key decides which code runs on every laptop. The SuperLink, its
SuperExec and every ServerApp run as one OS user, and a ServerApp is code someone
submitted. So ``hearth-server up`` refuses to start while ``PKI/org-signing.key``
exists and that user could use it: it can read it (``os.access``, as the
SuperLink process would; root reads everything), it owns it (an owner can make
it readable again with one chmod), or the key is not encrypted. The key belongs
offline (``hearth-server pki init --org-key-dir``); the SuperLink keeps only the
public half, ``PKI/org-signing.pub``, to check each submitted bundle.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from server.signing import ORG_KEY, ORG_PUBLIC_KEY


class CustodyError(Exception):
    """The org signing key is within the SuperLink's reach; one line says where and why."""


def _user() -> str:
    uid = os.geteuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _is_encrypted(data: bytes) -> bool:
    try:
        serialization.load_pem_private_key(data, password=None)
    except TypeError:
        return True  # "password was not given but private key is encrypted"
    except ValueError:
        return True  # not a key we can read without a password: no plaintext key either
    return False


def check_key_custody(pki_dir: Path) -> None:
    """Raise ``CustodyError`` if this process's user could use ``pki_dir/org-signing.key``.

    Call it in the process whose user the SuperLink, SuperExec and ServerApps
    run as (``hearth-server up`` starts them all as its own user).

    Raises
    ------
    CustodyError
        The key is readable, owned by this user, or unencrypted; or the public key
        the SuperLink checks bundles against is missing.

    """
    key = pki_dir / ORG_KEY
    user = _user()
    move = "move it offline (`hearth-server pki init --org-key-dir`) and sign there"
    try:
        owner = key.stat().st_uid  # through a symlink: the key it leads to
    except FileNotFoundError:
        owner = None  # no key here (or a link to an unmounted offline medium)
    except PermissionError:
        owner = None  # this user cannot even reach it
    if owner is not None:
        if os.access(key, os.R_OK):
            try:
                encrypted = _is_encrypted(key.read_bytes())
            except OSError:
                encrypted = True
            what = "an UNENCRYPTED" if not encrypted else "the (encrypted)"
            raise CustodyError(
                f"{key} is {what} org signing key and user {user}, who runs the SuperLink, "
                f"SuperExec and every ServerApp, can read it: {move}"
            )
        if owner == os.geteuid():
            raise CustodyError(
                f"{key} belongs to user {user}, who runs the SuperLink and every ServerApp "
                f"and can make it readable again: {move}"
            )
    if not (pki_dir / ORG_PUBLIC_KEY).is_file():
        raise CustodyError(
            f"{pki_dir / ORG_PUBLIC_KEY} is missing: the SuperLink checks every submitted "
            "bundle against the org public key"
        )


__all__ = ["CustodyError", "check_key_custody"]
