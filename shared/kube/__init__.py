"""The only code that imports the ``kubernetes`` client package.

``KubeApi`` turns API calls into plain data from ``shared.objects`` and client exceptions
into ``shared.errors``; every call is bounded by a timeout.
"""

from shared.kube.api import AlreadyExists, KubeApi, make_api_client

__all__ = ["AlreadyExists", "KubeApi", "make_api_client"]
