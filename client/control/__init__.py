"""What the employee decides and sees: consent, pause, sensitive apps, reports.

Consent records, the pause, the employee's list of sensitive apps, the signed
policy the device pinned, the running recorder's control socket and heartbeat, the
deployment record and admission (may this device take part now), and the status
and budget reports ``hearth status``, ``hearth budget`` and the dashboard show. It
may import storage/ (and policy/, privacy/), never another client package: the
recorder, the ClientApp, the SuperNode runner and the dashboard all read these rules
from here.
"""
