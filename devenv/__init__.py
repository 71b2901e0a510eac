"""Local stand-up of the real parts this product talks to, for tests and developers.

A real etcd + kube-apiserver + kube-controller-manager (binaries built from their Go
modules by ``hack/build-control-plane.sh``) and a real PostgreSQL from the machine's
binaries. Used by the pytest fixtures, ``make dev-up``/``make dev-down`` and the demo.
Never used by the webhook or the GC themselves.
"""
