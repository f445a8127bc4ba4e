"""The embedded local control plane: etcd, kube-apiserver, kube-scheduler,
kube-controller-manager and KWOK with fake GPU nodes, plus Redis, all on loopback.

Used by ``berth local up|down|status`` and by the test fixtures.
"""
