"""``python -m client.cli`` is the ``hearth`` command: the form a zygote can fork."""

from client.cli.main import app

app(prog_name="hearth")
