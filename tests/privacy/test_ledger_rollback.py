"""Someone holding the laptop's files rolls the privacy ledger back: it is caught, on real files."""

import os
import shutil
import stat

import pytest

from privacy.ledger import (
    BudgetRule,
    DeviceLedger,
    FileAnchor,
    LedgerRollbackError,
    reset_ledger,
)
from privacy.renyi_filter import DEFAULT_ORDERS, filter_for

RULE = BudgetRule(filter_for(DEFAULT_ORDERS, 10.0, 1e-5), 14.0)
NOW = 20_000 * 86400.0


class MemoryAnchor:
    """Stands in for the OS keyring entry: state a copy of the files cannot bring back."""

    where = "the test keyring"

    def __init__(self):
        self.value = None

    def read(self):
        return self.value

    def write(self, counter, digest):
        self.value = (counter, digest)


@pytest.fixture
def files(tmp_path):
    key = os.urandom(32)
    path = tmp_path / "ledger.bin"
    anchor = FileAnchor(tmp_path / "ledger.anchor", key)
    return path, key, anchor


def _spend(path, key, anchor, rounds=1):
    ledger = DeviceLedger(path, key, anchor)
    for server_round in range(rounds):
        ledger.record(server_round, (1.5, 0.25, 8), RULE, "h", now=NOW)
    return ledger


def test_a_copied_back_older_ledger_is_refused(files, tmp_path):
    path, key, anchor = files
    _spend(path, key, anchor)
    shutil.copy(path, tmp_path / "old.bin")
    _spend(path, key, anchor, rounds=2)
    shutil.copy(tmp_path / "old.bin", path)
    with pytest.raises(LedgerRollbackError, match=r"older or altered copy.*budget reset"):
        DeviceLedger(path, key, anchor)


def test_a_deleted_ledger_is_refused_not_read_as_zero_spent(files):
    path, key, anchor = files
    _spend(path, key, anchor)
    path.unlink()
    with pytest.raises(LedgerRollbackError, match=r"missing.*--i-understand"):
        DeviceLedger(path, key, anchor)


def test_a_deleted_anchor_is_refused_once_the_ledger_was_anchored(files):
    path, key, anchor = files
    _spend(path, key, anchor)
    anchor.path.unlink()
    with pytest.raises(LedgerRollbackError, match="anchor"):
        DeviceLedger(path, key, anchor)


def test_a_crash_between_the_ledger_and_its_anchor_is_not_a_rollback(files, tmp_path):
    path, key, anchor = files
    _spend(path, key, anchor)
    shutil.copy(anchor.path, tmp_path / "anchor.before")
    _spend(path, key, anchor)
    shutil.copy(tmp_path / "anchor.before", anchor.path)  # the anchor write never happened
    assert len(DeviceLedger(path, key, anchor).entries) == 2
    assert anchor.read()[0] == 2  # and it is repaired


def test_a_reset_is_recorded_and_no_older_copy_is_accepted_after_it(files, tmp_path):
    path, key, anchor = files
    _spend(path, key, anchor, rounds=3)
    shutil.copy(path, tmp_path / "old.bin")
    path.unlink()
    event = reset_ledger(path, key, anchor, "test device")
    ledger = DeviceLedger(path, key, anchor)
    assert ledger.entries == [] and ledger.resets == [event]
    assert event.reason == "test device"
    shutil.copy(tmp_path / "old.bin", path)
    with pytest.raises(LedgerRollbackError):
        DeviceLedger(path, key, anchor)


def test_an_anchor_out_of_reach_of_the_files_catches_restoring_the_whole_directory(tmp_path):
    key = os.urandom(32)
    path = tmp_path / "privacy" / "ledger.bin"
    keyring = MemoryAnchor()
    _spend(path, key, keyring)
    shutil.copytree(tmp_path / "privacy", tmp_path / "backup")
    _spend(path, key, keyring)
    shutil.rmtree(tmp_path / "privacy")
    shutil.copytree(tmp_path / "backup", tmp_path / "privacy")
    with pytest.raises(LedgerRollbackError):
        DeviceLedger(path, key, keyring)


def test_a_spend_is_durable_before_record_returns(files, monkeypatch):
    """Each file is fsynced before its rename and its directory after: a crash keeps the spend."""
    path, key, anchor = files
    ledger = DeviceLedger(path, key, anchor)
    events = []
    real_fsync, real_replace = os.fsync, type(path).replace

    def fsync(fd):
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(self, target):
        events.append("rename")
        return real_replace(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(type(path), "replace", replace)
    ledger.record(1, (1.5, 0.25, 8), RULE, "h", now=NOW)
    # The ledger, then its anchor: each written, fsynced, renamed, and the rename fsynced.
    assert events == ["fsync file", "rename", "fsync dir"] * 2
