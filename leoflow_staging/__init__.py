"""leoflow-staging: per-DAG-run ReadWriteMany staging volumes for Leoflow.

This package is the composition root: the ``leoflow-staging`` console script wires the
two programs (``webhook``, ``gc_job``) and the tools (``certs``, migrations) to the
settings read once at start-up.
"""

__version__ = "0.1.0"
