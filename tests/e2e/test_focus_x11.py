"""The X11 focus backend follows property changes on a real X server (no polling)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from Xlib import display as xlib_display

from client.recording.capture.focus_x11 import X11Focus
from client.recording.capture.x11_time import ServerClockProbe

pytestmark = pytest.mark.e2e


def _window(conn: Any, wm_class: str, title: str) -> Any:
    screen = conn.screen()
    window = screen.root.create_window(0, 0, 200, 100, 0, screen.root_depth)
    window.set_wm_class(wm_class, wm_class.capitalize())
    window.set_wm_name(title)
    window.map()
    conn.sync()
    return window


def _seen(focus: X11Focus, ok: Any, timeout: float = 2.0) -> Any:
    """The window manager updates its properties asynchronously: wait until ``ok`` holds."""
    deadline = time.monotonic() + timeout
    info = focus.active_window()
    while not ok(info) and time.monotonic() < deadline:
        time.sleep(0.02)
        info = focus.active_window()
    return info


def _in_front(kit: Any, focus: X11Focus, window: Any, app_id: str) -> Any:
    """Activate ``window`` once the window manager is done with freshly mapped ones.

    Openbox focuses a newly mapped window on its own, asynchronously: that can land
    after an activation made right after the map. Activating every window once, the
    last one twice, leaves nothing pending, so what follows sees only the test's moves.
    """
    kit.activate(str(window.id))
    time.sleep(0.3)
    kit.activate(str(window.id))
    return _seen(focus, lambda i: i is not None and i.app_id == app_id)


def test_focus_switches_and_title_changes_are_seen_through_the_watch(xdisplay, kit):
    conn = xlib_display.Display(xdisplay)
    focus = X11Focus(xdisplay)
    try:
        assert focus._watch is not None  # event driven, not polling
        editor = _window(conn, "code", "main.py - Code")
        term = _window(conn, "xterm", "~")
        first = _in_front(kit, focus, editor, "code")
        assert first is not None and first.app_id == "code"
        assert focus.active_window() is first  # nothing changed: no re-read
        kit.activate(str(term.id))
        info = _seen(focus, lambda i: i is not None and i.app_id == "terminal")
        assert info is not None and info.app_id == "terminal" and not info.secure_input
        term.set_wm_name("[sudo] password for ann")
        conn.sync()
        prompt = _seen(focus, lambda i: i is not None and i.secure_input)
        assert prompt is not None and prompt.secure_input
    finally:
        focus.close()
        conn.close()


def test_focus_that_left_and_came_back_between_two_looks_is_flagged(xdisplay, kit):
    # A canary typed into a chat app visited for less than one writer tick must not be
    # judged by the editor in front at both looks: the backend says it cannot vouch.
    conn = xlib_display.Display(xdisplay)
    focus = X11Focus(xdisplay)
    try:
        editor = _window(conn, "code", "notes.txt - Code")
        chat = _window(conn, "slack", "Slack | general")
        _in_front(kit, focus, editor, "code")
        before = focus.active_window()  # the settling above was a switch: look once more
        assert before is not None and before.app_id == "code" and not before.unseen_switch
        kit.activate(str(chat.id))  # no look while the chat is in front
        kit.activate(str(editor.id))
        time.sleep(0.3)  # the window manager's property updates
        back = focus.active_window()
        assert back is not None and back.app_id == "code" and back.unseen_switch
        again = focus.active_window()
        assert again is not None and not again.unseen_switch  # nothing happened since
        editor.set_wm_name("* notes.txt - Code")  # a title change is not a switch
        conn.sync()
        titled = _seen(focus, lambda i: i is not again)
        assert titled is not None and not titled.unseen_switch
    finally:
        focus.close()
        conn.close()


def test_a_switch_is_dated_by_the_x_servers_clock(xdisplay, kit):
    # The recorder keeps what is typed a tail after a sensitive app left the front,
    # before any look saw the new window, only if this date is right.
    conn = xlib_display.Display(xdisplay)
    probe = ServerClockProbe(xlib_display.Display(xdisplay))
    focus = X11Focus(xdisplay)
    try:
        server = probe.measure()
        focus.server_time = lambda ms: server.to_local(ms) + server.error
        editor = _window(conn, "code", "notes.txt - Code")
        term = _window(conn, "xterm", "~")
        _in_front(kit, focus, editor, "code")
        before = time.monotonic()
        kit.activate(str(term.id))
        after = time.monotonic()
        info = _seen(focus, lambda i: i is not None and i.app_id == "terminal")
        assert info is not None and info.front_since is not None
        assert before - server.error <= info.front_since <= after + 2 * server.error
        term.set_wm_name("vim notes")  # a title change is not a switch: same date
        conn.sync()
        retitled = _seen(focus, lambda i: i is not info)
        assert retitled is not None and retitled.front_since == info.front_since
        focus.server_time = None  # no input clock (no keys granted): undated
        kit.activate(str(editor.id))
        undated = _seen(focus, lambda i: i is not None and i.app_id == "code")
        assert undated is not None and undated.front_since is None
    finally:
        focus.close()
        probe.close()
        conn.close()
