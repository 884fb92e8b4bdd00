"""The employee's commands start without loading the training stack."""

from __future__ import annotations

import subprocess
import sys

from simulations.flwr_runner import PROJECT_ROOT

HEAVY = ("torch", "opacus", "dp_accounting")
LOADED = f"[m for m in {HEAVY!r} if m in sys.modules]"


def _fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter (so nothing is imported already)."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )


def test_the_hearth_cli_and_join_do_not_import_torch_or_the_accountants() -> None:
    # `hearth status` answered in ~6 s and every `hearth join` held ~400 MB while
    # the ledger module pulled Opacus (and so torch) in at import.
    out = _fresh_python(
        "import sys, client.cli.main, client.deployment.join, client.deployment.runner; "
        f"print({LOADED})"
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_task_lowers_its_priority_without_importing_torch() -> None:
    # Three of a SecAgg+ round's four messages never train: they must not load torch.
    out = _fresh_python(
        "import os, sys; from client.deployment.governor import lower_priority; lower_priority(); "
        f"print({LOADED}, os.environ['OMP_NUM_THREADS'])"
    )
    assert out.stdout.split() == ["[]", "1"], out.stdout + out.stderr


def test_the_recorder_process_does_not_import_numpy() -> None:
    # The recorder must stay under 60 MB: numpy alone is about 14 MB of it. Loading the
    # pinned policy (its Renyi check) and the capture backends must not pull it in.
    out = _fresh_python(
        "import sys, tempfile, pathlib; import client.cli.record, client.recording.recorder; "
        "import client.recording.capture.input_x11, client.recording.capture.focus_x11; "
        "from client.control.policy_pin import device_policy; "
        "from client.control.sensitive_apps import SensitiveAppsWatcher; "
        "home = pathlib.Path(tempfile.mkdtemp()); "
        "SensitiveAppsWatcher(device_policy(home), home).current(); "
        "print([m for m in ('numpy', *" + repr(HEAVY) + ") if m in sys.modules])"
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
