"""Taking part in a real federation: join, bundle trust, the SuperNode and its governor.

``hearth join`` (pin the organisation's key and policy), the checks every app
bundle passes before it runs, the SuperNode process and the runner that admits
each round, and the resource governor with its network metering. It may import
learning/, control/ and storage/ (and policy/, privacy/); nothing in client/ but
cli/ imports it.
"""
