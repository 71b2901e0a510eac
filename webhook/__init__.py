"""The mutating admission webhook.

Pure core: ``review`` (the AdmissionReview wire format and response envelope), ``intent``
(opt-in, ids, size), ``storage_choice`` (which StorageClass, by ``shared.storage_profiles``),
``storage_warnings`` (the warnings of a claim's creation), ``volume_choice`` (whose row it is), ``patching`` (the
JSON Patch), ``pending_claims`` (a created claim's next step until Bound). Shells: ``provisioning`` (ensures the
PVC and its row), ``provisioning_watch`` (watches created claims to Bound: the latency histogram and the
still-Pending Event), ``watched`` (the watch-fed caches), ``handler`` (request -> verdict), ``app`` (Flask),
``serving`` (gunicorn's stock gthread worker), ``metrics`` (prometheus-client).
"""
