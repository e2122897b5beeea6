{{/* flywheel-ingest hooks of the shared helpers (see _helpers.tpl). */}}

{{- define "flywheel-ingest.workloadKind" -}}Deployment{{- end -}}

{{- define "flywheel-ingest.usesStore" -}}true{{- end -}}

{{- define "flywheel-ingest.automountToken" -}}{{- end -}}

{{- define "flywheel-ingest.env" -}}
{{- if .Values.useRegistry }}
{{ include "flywheel.registryClientEnv" . }}
{{- end }}
{{- with .Values.tokenSecretRef }}{{ if .name }}
- name: FLYWHEEL_INGEST_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .name | quote }}
      key: {{ .key | default "token" | quote }}
{{- end }}{{ end }}
{{- with .Values.specs }}
- name: FLYWHEEL_INGEST_SPECS
  value: {{ . | quote }}
{{- end }}
{{- with .Values.auth.tokensSecret }}{{ if .name }}
- name: FLYWHEEL_INGEST_TOKENS_FILE
  value: {{ printf "/etc/flywheel/tokens/%s" (.key | default "tokens.yaml") | quote }}
{{- end }}{{ end }}
{{- end -}}

{{- define "flywheel-ingest.volumes" -}}
{{- with .Values.auth.tokensSecret }}{{ if .name }}
- name: tokens
  secret:
    secretName: {{ .name | quote }}
    items:
      - key: {{ .key | default "tokens.yaml" | quote }}
        path: {{ .key | default "tokens.yaml" | quote }}
{{- end }}{{ end }}
{{- end -}}

{{- define "flywheel-ingest.volumeMounts" -}}
{{- with .Values.auth.tokensSecret }}{{ if .name }}
- name: tokens
  mountPath: /etc/flywheel/tokens
  readOnly: true
{{- end }}{{ end }}
{{- end -}}

{{/* Consumer groups: services/ingest/src/flywheel_ingest/runtime.py (group_id=...). */}}
{{- define "flywheel-ingest.kedaTriggers" -}}
- group: flywheel-ingest-raw
  topic: data.raw.v1
- group: flywheel-ingest-writer
  topic: data.validated.v1
{{- end -}}
