"""Database access: the only package that imports SQLAlchemy and Alembic.

``schema`` holds the tables, ``engine`` builds engines with timeouts, ``volumes_repo`` and
``runs_repo`` return plain dataclasses from ``shared.volumes``, ``migrate`` runs Alembic.
"""
