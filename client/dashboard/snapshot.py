"""Everything the dashboard shows, gathered in one JSON-ready snapshot.

The recording state is ``status_report()``, the very report ``hearth status``
prints; the rest comes from the same functions the CLI uses (data summary,
budget, upload history, policy, sensitive apps and sites). Only plaintext metadata is
read: counts, sizes and names, never an event's content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from client.budget_commands import budget_figures, budget_report
from client.control_commands import status_report
from client.data_commands import daily_summary
from client.device import Device
from client.keys import KEY_FILE, VaultKeyError
from client.policy_pin import device_policy
from client.sensitive_apps import load_additions, load_site_additions
from client.vault import Vault, VaultFullError
from privacy.ledger import LedgerError
from privacy.policy import PolicyError, PrivacyPolicy, describe


def delta_in_words(delta: float) -> str:
    """``1e-05`` as "a 1 in 100,000 chance that the guarantee does not hold"."""
    if delta <= 0:
        return "the guarantee always holds (delta 0)"
    return f"a 1 in {round(1 / delta):,} chance that the guarantee does not hold"


def recording_status() -> dict[str, Any]:
    """``status_report()``, or why it cannot be read (a locked vault)."""
    try:
        return {"report": status_report(), "error": None}
    except (VaultKeyError, VaultFullError) as exc:
        return {"report": None, "error": str(exc)}


def _vault(device: Device, policy: PrivacyPolicy | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "exists": (device.vault_dir / KEY_FILE).exists(),
        "bytes": 0,
        "days": [],
        "corrupt_segments": [],
        "retention_days": policy.data.retention_days if policy else None,
        "quota_mb": policy.data.vault_quota_mb if policy else None,
        "error": None,
    }
    if not info["exists"]:
        return info
    try:
        with Vault.open(device.vault_dir) as vault:
            info["bytes"] = vault.size()
            info["days"] = daily_summary(vault)
            info["corrupt_segments"] = list(vault.corrupt_segments)
    except (VaultKeyError, VaultFullError) as exc:
        info["error"] = str(exc)
    return info


def _budget(device: Device, policy: PrivacyPolicy | None) -> dict[str, Any]:
    if policy is None:
        return {"error": "no privacy policy is in force"}
    if not (device.privacy_dir / KEY_FILE).exists():
        # Never create a key just to read nothing: a device that never trained spent nothing.
        report = budget_figures(None, policy, device.employee_cap())
    else:
        try:
            report = budget_report(device, policy)
        except (VaultKeyError, LedgerError) as exc:
            return {"error": str(exc)}
    return {**report, "delta_in_words": delta_in_words(report["delta"]), "error": None}


def _sensitive(home: Path, policy: PrivacyPolicy | None) -> dict[str, Any]:
    return {
        "policy_apps": sorted(policy.data.sensitive_apps) if policy else [],
        "policy_categories": sorted(c.value for c in policy.data.sensitive_categories)
        if policy
        else [],
        "yours": list(load_additions(home)),
        "policy_sites": sorted(policy.data.sensitive_sites) if policy else [],
        "your_sites": list(load_site_additions(home)),
    }


def snapshot(home: Path) -> dict[str, Any]:
    """The dashboard's whole state for the device under ``home``."""
    device = Device(home)
    policy: PrivacyPolicy | None
    try:
        policy, policy_error = device_policy(home), None
    except PolicyError as exc:
        policy, policy_error = None, str(exc)
    return {
        "status": recording_status(),
        "vault": _vault(device, policy),
        "budget": _budget(device, policy),
        "uploads": list(reversed(device.uploads())),
        "policy": {
            "lines": describe(policy).splitlines() if policy else [],
            "error": policy_error,
        },
        "sensitive_apps": _sensitive(home, policy),
    }
