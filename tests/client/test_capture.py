"""Capture pieces alone: key classes, shortcuts, pointer thinning, focus backends, thumbnails."""

from __future__ import annotations

import ctypes
import os
import sys
import time
from typing import Any

import pytest

from client.recording.capture.focus import (
    WindowInfo,
    app_id_from,
    identify,
    looks_like_secure_prompt,
)
from client.recording.capture.focus_macos import MacOSFocus
from client.recording.capture.focus_windows import WindowsFocus
from client.recording.capture.keys import KeyInterpreter, RawKey, classify
from client.recording.capture.pointer import MAX_MOVE_RATE, MoveCoalescer, ScreenBounds
from client.recording.capture.screens import ThumbnailSampler, downscale, thumbnail_size
from policy.events import AppCategory, KeyClass, Shortcut


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (RawKey(char="a"), KeyClass.LETTER),
        (RawKey(char="Ä"), KeyClass.LETTER),
        (RawKey(char="7"), KeyClass.DIGIT),
        (RawKey(char=";"), KeyClass.PUNCTUATION),
        (RawKey(name="space"), KeyClass.SPACE),
        (RawKey(name="enter"), KeyClass.ENTER),
        (RawKey(name="backspace"), KeyClass.EDIT),
        (RawKey(name="delete"), KeyClass.EDIT),
        (RawKey(name="left"), KeyClass.NAVIGATION),
        (RawKey(name="page_down"), KeyClass.NAVIGATION),
        (RawKey(name="tab"), KeyClass.NAVIGATION),
        (RawKey(name="shift_r"), KeyClass.MODIFIER),
        (RawKey(name="cmd"), KeyClass.MODIFIER),
        (RawKey(name="f7"), KeyClass.OTHER),
        (RawKey(), KeyClass.OTHER),
    ],
)
def test_key_classes(key: RawKey, expected: KeyClass) -> None:
    assert classify(key) is expected


@pytest.mark.parametrize(
    ("held", "key", "expected"),
    [
        (["ctrl_l"], RawKey(char="c"), Shortcut.COPY),
        (["ctrl_r"], RawKey(char="v"), Shortcut.PASTE),
        (["cmd"], RawKey(char="x"), Shortcut.CUT),
        (["ctrl"], RawKey(char="s"), Shortcut.SAVE),
        (["ctrl"], RawKey(char="z"), Shortcut.UNDO),
        (["ctrl", "shift"], RawKey(char="Z"), Shortcut.REDO),
        (["ctrl"], RawKey(char="y"), Shortcut.REDO),
        (["ctrl"], RawKey(char="f"), Shortcut.FIND),
        (["alt"], RawKey(name="tab"), Shortcut.SWITCH_APP),
        (["cmd"], RawKey(name="tab"), Shortcut.SWITCH_APP),
        (["ctrl"], RawKey(char="t"), Shortcut.NEW_TAB),
        (["ctrl"], RawKey(char="w"), Shortcut.CLOSE_TAB),
        (["ctrl"], RawKey(char="\x03"), Shortcut.COPY),  # Windows sends control codes
        ([], RawKey(name="f5"), Shortcut.REFRESH),
    ],
)
def test_named_shortcuts(held: list[str], key: RawKey, expected: Shortcut) -> None:
    keys = KeyInterpreter()
    for name in held:
        keys.press(RawKey(name=name))
    stroke = keys.press(key)
    assert stroke.shortcut is expected and stroke.typed is None


def test_releasing_the_modifier_ends_the_shortcut() -> None:
    keys = KeyInterpreter()
    keys.press(RawKey(name="ctrl_l"))
    keys.release(RawKey(name="ctrl_l"))
    stroke = keys.press(RawKey(char="c"))
    assert stroke.shortcut is None and stroke.key_class is KeyClass.LETTER
    assert stroke.typed == "c"


def test_keys_held_with_ctrl_type_nothing() -> None:
    keys = KeyInterpreter()
    keys.press(RawKey(name="ctrl"))
    assert keys.press(RawKey(char="k")).typed is None


def test_the_typed_character_never_shows_in_a_repr() -> None:
    assert "secret" not in repr(RawKey(char="secret"))
    assert "q" not in repr(KeyInterpreter().press(RawKey(char="q")))


def test_moves_are_thinned_to_the_rate_and_never_above_twenty_a_second() -> None:
    coalescer = MoveCoalescer(max_rate=100.0, min_distance=0.0)
    kept = [coalescer.feed(i / 1000, (i % 100) / 100, 0.5) for i in range(1000)]  # 1 kHz, 1 s
    assert sum(k is not None for k in kept) <= MAX_MOVE_RATE + 1


def test_a_resting_pointer_leaves_one_dwell_point() -> None:
    coalescer = MoveCoalescer(max_rate=5.0)
    assert coalescer.feed(0.0, 0.1, 0.1) is not None
    assert coalescer.feed(0.05, 0.4, 0.4) is None  # too soon: pending
    assert coalescer.dwell(0.2) is None  # not at rest long enough yet
    assert coalescer.dwell(0.5) == (0.05, 0.4, 0.4)
    assert coalescer.dwell(1.0) is None


def test_jitter_below_the_distance_is_not_a_move() -> None:
    coalescer = MoveCoalescer(max_rate=5.0, min_distance=0.01)
    coalescer.feed(0.0, 0.5, 0.5)
    assert coalescer.feed(1.0, 0.501, 0.5) is None


def test_screen_coordinates_are_normalized_and_clamped() -> None:
    bounds = ScreenBounds(-100, 0, 201, 101)
    assert bounds.normalize(0, 50) == (0.5, 0.5)
    assert bounds.normalize(500, -3) == (1.0, 0.0)


def test_app_ids_and_categories_from_window_classes() -> None:
    assert identify("Code", "code") == ("code", AppCategory.EDITOR)
    assert identify("Gnome-terminal", "gnome-terminal-server") == ("terminal", AppCategory.TERMINAL)
    assert identify("Slack", "slack") == ("slack", AppCategory.CHAT)
    assert identify("jetbrains-pycharm") == ("jetbrains", AppCategory.EDITOR)
    assert identify("Some Tool!") == ("some-tool", AppCategory.OTHER)
    assert app_id_from("Slack.exe") == "slack"


def test_password_prompts_are_recognized() -> None:
    assert looks_like_secure_prompt(("pinentry-gnome3", "Pinentry-gnome3"))
    assert looks_like_secure_prompt(("gcr-prompter",))
    assert looks_like_secure_prompt(("xfce4-terminal",), title="[sudo] password for ann")
    assert looks_like_secure_prompt(("polkit",), role="AuthenticationDialog")
    assert not looks_like_secure_prompt(("code",), title="main.py - Code")


def test_window_info_never_shows_its_hint() -> None:
    info = WindowInfo("firefox", AppCategory.BROWSER, hint="Private Browsing: my bank")
    assert "bank" not in repr(info)


# -- macOS backend, with the OS entry points mocked --------------------------------


def test_macos_frontmost_app_maps_bundle_ids() -> None:
    focus = MacOSFocus(
        frontmost=lambda: ("com.tinyspeck.slackmacgap", "Slack", "general"),
        secure_input_enabled=lambda: False,
    )
    info = focus.active_window()
    assert info is not None and (info.app_id, info.category) == ("slack", AppCategory.CHAT)
    assert not info.secure_input


def test_macos_secure_event_input_marks_secure_input() -> None:
    focus = MacOSFocus(
        frontmost=lambda: ("com.apple.Terminal", "Terminal", "sudo"),
        secure_input_enabled=lambda: True,
    )
    info = focus.active_window()
    assert info is not None and info.app_id == "terminal" and info.secure_input


def test_macos_unknown_app_uses_its_name_and_no_window_is_none() -> None:
    focus = MacOSFocus(
        frontmost=lambda: ("com.acme.Widget", "Widget", ""), secure_input_enabled=bool
    )
    info = focus.active_window()
    assert info is not None and (info.app_id, info.category) == ("widget", AppCategory.OTHER)
    assert (
        MacOSFocus(frontmost=lambda: ("", "", ""), secure_input_enabled=bool).active_window()
        is None
    )


# -- Windows backend, with a mock user32 -------------------------------------------


class FakeUser32:
    def __init__(self, hwnd: int, pid: int, klass: str, title: str) -> None:
        self.hwnd, self.pid, self.klass, self.title = hwnd, pid, klass, title

    def GetForegroundWindow(self) -> int:
        return self.hwnd

    def GetWindowThreadProcessId(self, hwnd: int, pid_ref: Any) -> int:
        ctypes.cast(pid_ref, ctypes.POINTER(ctypes.c_ulong)).contents.value = self.pid
        return 1

    def GetClassNameW(self, hwnd: int, buffer: Any, size: int) -> int:
        buffer.value = self.klass
        return len(self.klass)

    def GetWindowTextW(self, hwnd: int, buffer: Any, size: int) -> int:
        buffer.value = self.title
        return len(self.title)


def test_windows_foreground_process_is_the_app() -> None:
    user32 = FakeUser32(42, 1234, "Chrome_WidgetWin_1", "Inbox - Outlook")
    names = {1234: "OUTLOOK.EXE"}
    info = WindowsFocus(user32, process_name=names.__getitem__).active_window()
    assert info is not None and (info.app_id, info.category) == ("outlook", AppCategory.EMAIL)
    assert not info.secure_input


def test_windows_credential_dialog_is_secure_input() -> None:
    user32 = FakeUser32(7, 99, "Credential Dialog Xaml Host", "Windows Security")
    info = WindowsFocus(user32, process_name=lambda _: "CredentialUIBroker.exe").active_window()
    assert info is not None and info.secure_input


def test_windows_nothing_in_front_is_none() -> None:
    user32 = FakeUser32(0, 0, "", "")
    assert WindowsFocus(user32, process_name=lambda _: "").active_window() is None


# -- thumbnails -------------------------------------------------------------------


def test_thumbnails_are_tiny_grayscale_and_keep_the_aspect() -> None:
    assert thumbnail_size(1920, 1080) == (64, 36)
    assert thumbnail_size(1280, 800) == (64, 40)
    white = bytes([255, 255, 255, 255]) * (320 * 200)
    width, height, pixels = downscale(320, 200, white)
    assert (width, height) == (64, 40) and len(pixels) == 64 * 40
    assert set(pixels) == {254} or set(pixels) == {255}


def test_an_unchanged_screen_gives_no_new_thumbnail() -> None:
    screens = [bytes([0, 0, 0, 255]) * (160 * 100)] * 2 + [bytes([255] * 4) * (160 * 100)]
    grabs = iter(screens)
    sampler = ThumbnailSampler(lambda: (160, 100, next(grabs)), interval=1.0)
    assert sampler.sample(0.0) is not None
    assert sampler.sample(0.5) is None  # not due
    assert sampler.sample(1.0) is None  # unchanged
    assert sampler.sample(2.0) is not None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ptys through /proc: Linux")
def test_echo_off_in_line_mode_is_a_password_prompt_and_raw_mode_is_not() -> None:
    import pty  # noqa: PLC0415
    import termios  # noqa: PLC0415

    from client.recording.capture.terminal_echo import EchoOffProbe  # noqa: PLC0415

    child, master = pty.fork()  # the child's controlling terminal is the new pty
    if child == 0:
        time.sleep(30)
        os._exit(0)
    try:
        probe = EchoOffProbe(rescan=0.0)
        deadline = time.monotonic() + 5.0
        while not probe.ttys(child) and time.monotonic() < deadline:
            time.sleep(0.01)  # the child is still taking the pty as its terminal
        (tty,) = probe.ttys(child)
        assert tty.startswith("/dev/pts/")
        attrs = termios.tcgetattr(master)
        assert not probe.password_prompt(child)  # a shell: echo on
        attrs[3] &= ~termios.ECHO  # what getpass and sudo do
        termios.tcsetattr(master, termios.TCSANOW, attrs)
        assert probe.password_prompt(child)
        attrs[3] &= ~termios.ICANON  # raw mode, as vim: recorded normally
        termios.tcsetattr(master, termios.TCSANOW, attrs)
        assert not probe.password_prompt(child)
        assert not probe.password_prompt(0)  # no _NET_WM_PID: nothing to look at
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
        os.close(master)
