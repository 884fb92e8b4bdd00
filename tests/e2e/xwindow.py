"""A tiny X11 window with a chosen WM_CLASS and title, mapped until killed.

Run as ``python xwindow.py CLASS TITLE``; prints the window id once mapped.
"""

from __future__ import annotations

import signal
import sys

from Xlib import X, Xatom, display


def main() -> None:
    klass, title = sys.argv[1], sys.argv[2]
    role = sys.argv[3] if len(sys.argv) > 3 else ""
    d = display.Display()
    screen = d.screen()
    window = screen.root.create_window(
        10,
        10,
        400,
        300,
        1,
        screen.root_depth,
        background_pixel=screen.white_pixel,
        event_mask=X.ExposureMask | X.KeyPressMask | X.StructureNotifyMask,
    )
    window.set_wm_class(klass, klass.capitalize())
    window.set_wm_name(title)
    window.change_property(
        d.intern_atom("_NET_WM_NAME"), d.intern_atom("UTF8_STRING"), 8, title.encode()
    )
    if role:
        window.change_property(d.intern_atom("WM_WINDOW_ROLE"), Xatom.STRING, 8, role.encode())
    window.map()
    d.sync()
    while True:
        event = d.next_event()
        if event.type == X.MapNotify:
            print(window.id, flush=True)
            break
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        d.next_event()


if __name__ == "__main__":
    main()
