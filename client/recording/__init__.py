"""Recording: what the employee does, captured as little as the consent allows.

``capture/`` talks to the desktop (input listeners, the focused window, password
prompts, screen thumbnails). The recorder (``recorder``) wires its parts around
one writer thread: ``input_queue`` (callbacks that only stamp and queue),
``control_watch`` (consent, pause and sensitive apps, from files and the control
socket), ``focus_judge`` (which app is in front, and what typed around a check may
be kept), ``text_assembler`` (key runs and redacted text, via ``redact``),
``gates`` (every event passes them before it is buffered) and ``writer`` (sequence
numbers, constant-rate sealing into the vault, the heartbeat). One ``clock`` stamps
and times everything, so tests drive time instead of sleeping.
"""
