"""The employee's side of hearth, one package per concern (docs/design.md, "The package map").

cli/ (the ``hearth`` commands), dashboard/, recording/ (recorder and capture),
learning/ (the ClientApp), deployment/ (join, bundle trust, SuperNode), control/
(consent, pause, reports) and storage/ (vault, keys, deletion); imports flow in that
order, checked by ``python -m tests.architecture``.
"""
