"""The passphrase of the org signing key: from ``HEARTH_ORG_KEY_PASSPHRASE`` or a prompt.

The org signing key decides which code every laptop runs, so it is only ever
written encrypted (``hearth-server pki init``), and its passphrase is asked for
each time it is used (``hearth-server sign``). Scripts and tests may set
``HEARTH_ORG_KEY_PASSPHRASE`` instead. ``hearth-server up`` removes that variable
from the environment of the SuperLink, so no SuperExec or ServerApp ever sees it.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Final

PASSPHRASE_ENV: Final = "HEARTH_ORG_KEY_PASSPHRASE"  # noqa: S105 (a variable name)
MIN_LENGTH: Final = 12


class PassphraseError(Exception):
    """No usable passphrase; the message is one line that says why."""


def org_key_passphrase(*, new: bool = False) -> str:
    """The org key's passphrase: ``HEARTH_ORG_KEY_PASSPHRASE``, or asked on the terminal.

    Parameters
    ----------
    new
        The passphrase is for a key being created: it is asked twice and must be
        at least ``MIN_LENGTH`` characters.

    Returns
    -------
    str
        The passphrase.

    Raises
    ------
    PassphraseError
        Neither the variable nor a terminal gave one, the two entries differ, or a
        new one is too short.

    """
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase is None:
        if not sys.stdin.isatty():
            raise PassphraseError(
                f"the org signing key needs its passphrase: set {PASSPHRASE_ENV} "
                "or run this on a terminal"
            )
        passphrase = getpass.getpass("org signing key passphrase: ")
        if new and getpass.getpass("again: ") != passphrase:
            raise PassphraseError("the two passphrases differ")
    if not passphrase:
        raise PassphraseError("the org signing key passphrase is empty")
    if new and len(passphrase) < MIN_LENGTH:
        raise PassphraseError(
            f"the org signing key passphrase must be at least {MIN_LENGTH} characters"
        )
    return passphrase


def without_passphrase(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the org key passphrase (for every process of the SuperLink)."""
    return {name: value for name, value in env.items() if name != PASSPHRASE_ENV}


__all__ = [
    "MIN_LENGTH",
    "PASSPHRASE_ENV",
    "PassphraseError",
    "org_key_passphrase",
    "without_passphrase",
]
