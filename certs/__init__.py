"""Certificates for the webhook's TLS.

``issuance``: pure CA / serving / client certificate generation (ECDSA P-256).
``bundle``: pure decision to reuse, renew or create the webhook's CA and serving pair.
``wiring``: the shell that keeps them in a Secret and the caBundle in the
MutatingWebhookConfiguration (used by the chart's hook Jobs via ``leoflow-staging certs``).
"""
