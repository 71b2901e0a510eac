"""Code both programs use: settings, errors, naming, wire types, Kubernetes and database access.

Layering (enforced by import-linter, see ``.importlinter``): ``shared`` imports neither
``webhook`` nor ``gc_job``; only ``shared.kube`` imports the ``kubernetes`` package; only
``shared.db`` imports SQLAlchemy and Alembic.
"""
