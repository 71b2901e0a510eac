{{/*
The alert rules (docs/operators.md "Metrics and alerts"); the PrometheusRule ships them and the tests
run `promtool check rules` and `promtool test rules` on exactly this text. Several webhook replicas
export the same database series: rules on them take max().
*/}}
{{- define "leoflow-staging.alertGroups" -}}
{{- $r := .Values.metrics.prometheusRule -}}
- name: leoflow-staging.webhook
  rules:
    - alert: LeoflowStagingWebhookSlow
      expr: |
        histogram_quantile(0.99, sum by (le) (rate(
          apiserver_admission_webhook_admission_duration_seconds_bucket{name="staging.leoflow.io"}[5m]))) > 5
      for: 10m
      labels: {severity: warning}
      annotations:
        summary: "The apiserver waits over 5 s (p99) for the staging webhook, TLS and network included."
    - alert: LeoflowStagingWebhookUnreachable
      expr: |
        sum(rate(apiserver_admission_webhook_rejection_count{name="staging.leoflow.io",
          error_type="calling_webhook_error"}[5m])) > 0
      for: 5m
      labels: {severity: critical}
      annotations:
        summary: "The apiserver cannot call the staging webhook: opted-in pods are not created (failurePolicy Fail)."
    - alert: LeoflowStagingDependencyDown
      expr: |
        sum by (reason) (rate(leoflow_staging_admissions_total{outcome="denied",
          reason=~"database_unavailable|kubernetes_unavailable|timeout|internal_error|record_failed"}[5m])) > 0
      for: 5m
      labels: {severity: critical}
      annotations:
        summary: {{`"Retriable denials ({{ $labels.reason }}): the database or the apiserver is failing the webhook."`}}
    - alert: LeoflowStagingPlatformDenials
      expr: |
        sum by (reason) (increase(leoflow_staging_admissions_total{outcome="denied",
          reason=~"no_rwx_class|storage_class_not_found|kubernetes_refused|pvc_not_ours|database_schema"}[15m])) > 0
      labels: {severity: warning}
      annotations:
        summary: {{`"Denials that need a platform fix ({{ $labels.reason }}); retrying alone does not help."`}}
    - alert: LeoflowStagingStuckReclaims
      expr: |
        sum(increase(leoflow_staging_admissions_total{outcome="denied",
          reason=~"reclaiming|pvc_terminating"}[30m])) > 20
      labels: {severity: warning}
      annotations:
        summary: "Many pods meet a PVC being reclaimed (clear + re-run of runs whose volume is going away)."
    - alert: LeoflowStagingHandlerSlow
      expr: |
        histogram_quantile(0.99, sum by (le) (rate(leoflow_staging_admission_duration_seconds_bucket[5m]))) > 2
      for: 10m
      labels: {severity: warning}
      annotations:
        summary: "The webhook takes over 2 s (p99) to answer; the budget is 7 s, the apiserver gives up at 10 s."
- name: leoflow-staging.inventory
  rules:
    - alert: LeoflowStagingInventoryUnreadable
      expr: max(leoflow_staging_inventory_up) == 0
      for: 10m
      labels: {severity: warning}
      annotations:
        summary: "The webhook cannot read the staging inventory from the database (see its metrics_read_failed logs)."
    - alert: LeoflowStagingStorageClaimedHigh
      expr: sum(max by (namespace, storage_class) (leoflow_staging_requested_bytes)) > {{ $r.requestedBytesThreshold | int64 }}
      for: 15m
      labels: {severity: warning}
      annotations:
        summary: {{`"Staging volumes request {{ $value | humanize1024 }}B, above the configured threshold."`}}
    - alert: LeoflowStagingReclaimNotFinishing
      expr: max(leoflow_staging_oldest_reclaiming_seconds) > {{ $r.stuckReclaimSeconds | int }}
      labels: {severity: warning}
      annotations:
        summary: {{`"A reclaim has been in progress for {{ $value | humanizeDuration }}: pods still hold the claim (kubectl describe pvc)."`}}
- name: leoflow-staging.gc
  rules:
    - alert: LeoflowStagingGcNotSucceeding
      expr: time() - max(leoflow_staging_gc_last_success_timestamp_seconds) > {{ mul 2 ($r.gcIntervalSeconds | int) }}
      labels: {severity: critical}
      annotations:
        summary: "No GC sweep has completed for twice its schedule: volumes of finished runs are not reclaimed."
    - alert: LeoflowStagingGcSweepsSkipped
      expr: max(leoflow_staging_gc_skipped_sweeps) >= {{ $r.skippedSweeps | int }}
      labels: {severity: warning}
      annotations:
        summary: {{`"{{ $value }} GC sweeps in a row found the lock held: a sweep hangs or runs far longer than its schedule."`}}
    - alert: LeoflowStagingGcItemsFailing
      expr: max(leoflow_staging_gc_last_sweep_results{outcome="failed"}) > 0
      for: 30m
      labels: {severity: warning}
      annotations:
        summary: "GC sweeps keep failing items (the JSON lines with event failed say why)."
{{- end -}}
