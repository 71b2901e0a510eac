{{/* Names: <chart>.<component>.<thing>, truncated to 63 characters. */}}
{{- define "leoflow-staging.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "leoflow-staging.webhook.name" -}}
{{- printf "%s-webhook" (include "leoflow-staging.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "leoflow-staging.gc.name" -}}
{{- printf "%s-gc" (include "leoflow-staging.fullname" .) | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "leoflow-staging.certs.name" -}}
{{- printf "%s-certgen" (include "leoflow-staging.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "leoflow-staging.certs.secret" -}}
{{- printf "%s-webhook-tls" (include "leoflow-staging.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "leoflow-staging.webhook.config" -}}
{{- include "leoflow-staging.fullname" . -}}
{{- end -}}

{{- define "leoflow-staging.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: leoflow
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "leoflow-staging.webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "leoflow-staging.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The installation's name: the value of leoflow.io/staging-instance on its namespaces and PVCs. */}}
{{- define "leoflow-staging.instance" -}}
{{- .Values.config.instance | default .Release.Name -}}
{{- end -}}

{{/* The namespace `helm test` dry-runs a pod in: test.namespace, else the first served one, else default. */}}
{{- define "leoflow-staging.test.namespace" -}}
{{- .Values.test.namespace | default (first .Values.namespaces) | default "default" -}}
{{- end -}}

{{/* The shared claim's name in the shared-claim mode (storage.mode=shared), else empty. */}}
{{- define "leoflow-staging.sharedClaim" -}}
{{- if eq .Values.storage.mode "shared" -}}
{{- required "storage.sharedClaim.name is required with storage.mode=shared: the ReadWriteMany PVC of every served namespace that holds the runs' directories" .Values.storage.sharedClaim.name -}}
{{- end -}}
{{- end -}}

{{/* The settings every program reads (LEOFLOW_STAGING_*), from .Values.config. */}}
{{- define "leoflow-staging.env" -}}
{{- if ge (float64 .Values.config.requestBudget) (float64 .Values.webhook.timeoutSeconds) -}}
{{- fail (printf "config.requestBudget (%v s) must be below webhook.timeoutSeconds (%v s): the webhook must answer before the apiserver gives up" .Values.config.requestBudget .Values.webhook.timeoutSeconds) -}}
{{- end -}}
{{- if or (has "kube-system" .Values.namespaces) (has .Release.Namespace .Values.namespaces) -}}
{{- fail (printf "namespaces: kube-system and the release namespace (%s) are never served (a webhook that admits its own pods can deadlock)" .Release.Namespace) -}}
{{- end -}}
- name: LEOFLOW_STAGING_INSTANCE
  value: {{ .Values.config.instance | default .Release.Name | quote }}
- {name: LEOFLOW_STAGING_NAMESPACES, value: {{ join "," .Values.namespaces | quote }}}
- {name: LEOFLOW_STAGING_IMAGE, value: {{ include "leoflow-staging.image" . | quote }}}
{{- if include "leoflow-staging.sharedClaim" . }}
- {name: LEOFLOW_STAGING_SHARED_CLAIM, value: {{ .Values.storage.sharedClaim.name | quote }}}
{{- if .Values.storage.sharedClaim.storageClass }}
- {name: LEOFLOW_STAGING_SHARED_CLAIM_CLASS, value: {{ .Values.storage.sharedClaim.storageClass | quote }}}
- {name: LEOFLOW_STAGING_SHARED_CLAIM_SIZE, value: {{ .Values.storage.sharedClaim.size | quote }}}
{{- end }}
{{- end }}
- {name: LEOFLOW_STAGING_CLEANUP_WAIT, value: {{ .Values.storage.cleanup.waitSeconds | quote }}}
{{- if .Values.storage.cleanup.resources }}
- {name: LEOFLOW_STAGING_CLEANUP_RESOURCES, value: {{ .Values.storage.cleanup.resources | toJson | quote }}}
{{- end }}
- {name: LEOFLOW_STAGING_PREPARE_CLAIMS, value: {{ .Values.storage.prepareClaims | quote }}}
- name: LEOFLOW_STAGING_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required: a Secret holding the metadatabase URL" .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
{{- with .Values.config }}
{{- if .storageClass }}
- {name: LEOFLOW_STAGING_STORAGE_CLASS, value: {{ .storageClass | quote }}}
{{- end }}
{{- if .rwxProvisioners }}
- {name: LEOFLOW_STAGING_RWX_PROVISIONERS, value: {{ join "," .rwxProvisioners | quote }}}
{{- end }}
- {name: LEOFLOW_STAGING_IDENTITY, value: {{ .identity | quote }}}
- {name: LEOFLOW_STAGING_DEFAULT_SIZE, value: {{ .defaultSize | quote }}}
- {name: LEOFLOW_STAGING_MAX_SIZE, value: {{ .maxSize | quote }}}
- {name: LEOFLOW_STAGING_FAILED_TTL, value: {{ .failedTtl | quote }}}
- {name: LEOFLOW_STAGING_AUDIT_RETENTION, value: {{ .auditRetention | quote }}}
- {name: LEOFLOW_STAGING_DB_TIMEOUT, value: {{ .dbTimeout | quote }}}
- {name: LEOFLOW_STAGING_KUBE_TIMEOUT, value: {{ .kubeTimeout | quote }}}
- {name: LEOFLOW_STAGING_REQUEST_BUDGET, value: {{ .requestBudget | quote }}}
- {name: LEOFLOW_STAGING_WATCH_STALE_SECONDS, value: {{ .watchStaleSeconds | quote }}}
- {name: LEOFLOW_STAGING_PENDING_EVENT_AFTER, value: {{ .pendingEventAfter | quote }}}
- {name: LEOFLOW_STAGING_METRICS_CACHE_SECONDS, value: {{ .metricsCacheSeconds | quote }}}
- {name: LEOFLOW_STAGING_EVENTS, value: {{ .events | quote }}}
- {name: LEOFLOW_STAGING_LOG_LEVEL, value: {{ .logLevel | quote }}}
- {name: LEOFLOW_STAGING_RUNS_TABLE, value: {{ .runs.table | quote }}}
- {name: LEOFLOW_STAGING_RUNS_DAG_ID_COLUMN, value: {{ .runs.dagIdColumn | quote }}}
- {name: LEOFLOW_STAGING_RUNS_RUN_ID_COLUMN, value: {{ .runs.runIdColumn | quote }}}
- {name: LEOFLOW_STAGING_RUNS_STATE_COLUMN, value: {{ .runs.stateColumn | quote }}}
- {name: LEOFLOW_STAGING_RUNS_END_DATE_COLUMN, value: {{ .runs.endDateColumn | quote }}}
- {name: LEOFLOW_STAGING_RUNS_SUCCESS_STATES, value: {{ join "," .runs.successStates | quote }}}
- {name: LEOFLOW_STAGING_RUNS_FAILED_STATES, value: {{ join "," .runs.failedStates | quote }}}
{{- end }}
{{- end -}}

{{- define "leoflow-staging.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser | default 10001 }}
runAsGroup: {{ .Values.securityContext.runAsGroup | default 10001 }}
fsGroup: {{ .Values.securityContext.runAsGroup | default 10001 }}
seccompProfile: {type: RuntimeDefault}
{{- end -}}
