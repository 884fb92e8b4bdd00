"""The ClientApp and local training: featurize, DP-SGD, clip, guard what leaves.

Flower's ClientApp, the training and evaluation round, the featurizer, clipping,
the egress guard, distributed noise and the SecAgg+ guard, and the device as the
ClientApp sees it (its vault read through storage/, its policy and admission from
control/). It may import storage/ and control/ (and policy/, privacy/); it never
imports deployment/, cli/, recording/ or the dashboard, so the signed bundle carries
the ClientApp without the recorder or the employee's tools.
"""
