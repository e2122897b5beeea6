{{/* flywheel-registry hooks of the shared helpers (see _helpers.tpl). */}}

{{- define "flywheel-registry.workloadKind" -}}Deployment{{- end -}}

{{- define "flywheel-registry.usesStore" -}}true{{- end -}}

{{- define "flywheel-registry.automountToken" -}}{{- end -}}

{{- define "flywheel-registry.sqlite" -}}
{{- if not .Values.database.urlSecretRef.name -}}true{{- end -}}
{{- end -}}

{{- define "flywheel-registry.sqliteClaim" -}}
{{- .Values.database.sqlite.persistence.existingClaim | default (printf "%s-sqlite" (include "flywheel.fullname" .)) -}}
{{- end -}}

{{/* Settings checks: fail early instead of a pod that refuses to start. */}}
{{- define "flywheel-registry.validate" -}}
{{- $g := .Values.global | default dict -}}
{{- $tok := ($g.registry | default dict).tokenSecretRef | default dict -}}
{{- if and (eq ($g.environment | default "dev") "production") (not $tok.name) (not .Values.auth.tokensSecret.name) -}}
{{- fail "global.environment=production needs global.registry.tokenSecretRef.name or auth.tokensSecret.name: the registry refuses to start without FLYWHEEL_REGISTRY_TOKEN or FLYWHEEL_REGISTRY_TOKENS_FILE" -}}
{{- end -}}
{{- if and (include "flywheel-registry.sqlite" .) (or (gt (.Values.replicaCount | int) 1) .Values.autoscaling.enabled) -}}
{{- fail "SQLite (no database.urlSecretRef) supports one replica only: set database.urlSecretRef or replicaCount=1 and autoscaling.enabled=false" -}}
{{- end -}}
{{- end -}}

{{/* The database URL and the token of the registry itself. */}}
{{- define "flywheel-registry.dbEnv" -}}
{{- if include "flywheel-registry.sqlite" . }}
- name: FLYWHEEL_REGISTRY_DATABASE_URL
  value: sqlite:////var/lib/flywheel/registry/registry.db
{{- else }}
- name: FLYWHEEL_REGISTRY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.urlSecretRef.name | quote }}
      key: {{ .Values.database.urlSecretRef.key | default "url" | quote }}
{{- end }}
{{- $g := .Values.global | default dict -}}
{{- $tok := ($g.registry | default dict).tokenSecretRef | default dict -}}
{{- if $tok.name }}
- name: FLYWHEEL_REGISTRY_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $tok.name | quote }}
      key: {{ $tok.key | default "token" | quote }}
{{- end }}
{{- end -}}

{{- define "flywheel-registry.env" -}}
{{ include "flywheel-registry.dbEnv" . }}
- name: FLYWHEEL_REGISTRY_READ_AUTH
  value: {{ .Values.readAuth | toString | quote }}
{{- with .Values.auth.tokensSecret }}{{ if .name }}
- name: FLYWHEEL_REGISTRY_TOKENS_FILE
  value: {{ printf "/etc/flywheel/tokens/%s" (.key | default "tokens.yaml") | quote }}
{{- end }}{{ end }}
{{- end -}}

{{- define "flywheel-registry.volumes" -}}
{{- if include "flywheel-registry.sqlite" . }}
- name: sqlite
{{- if .Values.database.sqlite.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "flywheel-registry.sqliteClaim" . | quote }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}
{{- with .Values.auth.tokensSecret }}{{ if .name }}
- name: tokens
  secret:
    secretName: {{ .name | quote }}
    items:
      - key: {{ .key | default "tokens.yaml" | quote }}
        path: {{ .key | default "tokens.yaml" | quote }}
{{- end }}{{ end }}
{{- end -}}

{{- define "flywheel-registry.volumeMounts" -}}
{{- if include "flywheel-registry.sqlite" . }}
- name: sqlite
  mountPath: /var/lib/flywheel/registry
{{- end }}
{{- with .Values.auth.tokensSecret }}{{ if .name }}
- name: tokens
  mountPath: /etc/flywheel/tokens
  readOnly: true
{{- end }}{{ end }}
{{- end -}}

{{- define "flywheel-registry.kedaTriggers" -}}{{- end -}}
