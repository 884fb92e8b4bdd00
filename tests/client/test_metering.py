"""Metered networks: what NetworkManager says over D-Bus, and "unknown" when nothing says."""

import os
import stat
import sys

import pytest

from client.deployment.metering import Metering, network_metering, parse_busctl, parse_gdbus

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux backend")


def _fake_tool(directory, name, output, code=0):
    tool = directory / name
    tool.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\nexit {code}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


@pytest.fixture
def tools(tmp_path, monkeypatch):
    """A PATH holding only the fake D-Bus tools a test writes."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", str(directory))
    return directory


@pytest.mark.parametrize(
    ("value", "metering"),
    [
        (0, Metering.UNKNOWN),
        (1, Metering.METERED),
        (2, Metering.UNMETERED),
        (3, Metering.METERED),  # NetworkManager's guess counts as what it guesses
        (4, Metering.UNMETERED),
        (9, Metering.UNKNOWN),  # a value hearth does not know
    ],
)
def test_networkmanagers_metered_property_read_with_busctl(tools, value, metering):
    _fake_tool(tools, "busctl", f"u {value}")
    assert network_metering() is metering


def test_gdbus_answers_when_busctl_is_missing(tools):
    _fake_tool(tools, "gdbus", "(<uint32 1>,)")
    assert network_metering() is Metering.METERED


def test_a_failing_busctl_falls_back_to_gdbus(tools):
    _fake_tool(tools, "busctl", "Failed to connect to bus", code=1)
    _fake_tool(tools, "gdbus", "(<uint32 2>,)")
    assert network_metering() is Metering.UNMETERED


def test_no_tool_and_no_bus_is_unknown_not_unmetered(tools):
    assert network_metering() is Metering.UNKNOWN
    _fake_tool(tools, "busctl", "Failed to connect to bus: No such file or directory", code=1)
    _fake_tool(tools, "gdbus", "Error connecting", code=1)
    assert network_metering() is Metering.UNKNOWN


def test_output_hearth_does_not_understand_is_unknown(tools):
    _fake_tool(tools, "busctl", "s yes")
    assert network_metering() is Metering.UNKNOWN


def test_this_machine_without_networkmanager_says_unknown():
    # The real tools against the real (absent) system bus: never "unmetered" by accident.
    if os.path.exists("/run/dbus/system_bus_socket"):
        pytest.skip("a system bus is running here")
    assert network_metering() is Metering.UNKNOWN


def test_the_two_output_formats():
    assert parse_busctl("u 4\n") == 4
    assert parse_gdbus("(<uint32 3>,)\n") == 3
    assert parse_busctl("(<uint32 3>,)") is None
    assert parse_gdbus("u 4") is None
