"""What the laptop keeps on disk: the encrypted vault, its keys, retention and deletion.

The vault's segments and sealed manifest, per-day keys, the wrapped data keys and
the OS-keyring anchors, the hearth home's private directories and the synthetic
marker. It is the bottom of client/: it imports no other client package (only
policy/ and privacy/), so everything above can read and delete the employee's data
through one API.
"""
