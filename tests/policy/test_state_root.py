"""One lookup of HEARTH_HOME: a device's state at the root, a server's under it."""

import stat

import platformdirs

from client.home import hearth_home
from server.home import server_home


def _private(path):
    return stat.S_IMODE(path.stat().st_mode) == 0o700


def test_device_and_server_state_follow_hearth_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))
    assert hearth_home() == tmp_path / "home" and _private(tmp_path / "home")
    assert server_home() == tmp_path / "home" / "server" and _private(server_home())


def test_without_hearth_home_both_use_the_platforms_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("HEARTH_HOME")
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda name: str(tmp_path / name))
    assert hearth_home() == tmp_path / "hearth"
    assert server_home() == tmp_path / "hearth" / "server"
