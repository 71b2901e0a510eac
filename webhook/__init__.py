"""The mutating admission webhook.

Pure core: ``review`` (the AdmissionReview wire format and response envelope), ``intent``
(opt-in, ids, size), ``storage_choice`` (which StorageClass), ``patching`` (the JSON Patch).
Shells: ``provisioning`` (ensures the PVC and its row), ``handler`` (request -> verdict),
``app`` (Flask), ``wsgi_routes`` (the hot routes in front of it), ``serving`` (gunicorn),
``metrics`` (prometheus-client).
"""
