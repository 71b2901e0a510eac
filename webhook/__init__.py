"""The mutating admission webhook.

Pure core: ``review`` (the AdmissionReview wire format and response envelope), ``intent``
(opt-in, ids, size), ``storage_choice`` (which StorageClass), ``volume_choice`` (whose row it is),
``patching`` (the JSON Patch). Shells: ``provisioning`` (ensures the PVC and its row), ``watched`` (the
watch-fed caches), ``handler`` (request -> verdict), ``app`` (Flask), ``serving`` (gunicorn's stock gthread
worker), ``metrics`` (prometheus-client).
"""
