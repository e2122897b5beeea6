{{/* flywheel-serving hooks of the shared helpers (see _helpers.tpl). */}}

{{- define "flywheel-serving.workloadKind" -}}Deployment{{- end -}}

{{/* Serving reads artifacts through the registry's API, not from the store. */}}
{{- define "flywheel-serving.usesStore" -}}{{- end -}}

{{- define "flywheel-serving.automountToken" -}}{{- end -}}

{{- define "flywheel-serving.env" -}}
{{ include "flywheel.registryClientEnv" . }}
- name: FLYWHEEL_SERVING_WORKERS
  value: {{ .Values.workers | int | quote }}
{{- with .Values.models }}
- name: FLYWHEEL_SERVING_MODELS
  value: {{ join "," . | quote }}
{{- end }}
- name: BENTOML_HOME
  value: /tmp/bentoml
- name: BENTOML_DO_NOT_TRACK
  value: "true"
{{- end -}}

{{- define "flywheel-serving.volumes" -}}{{- end -}}

{{- define "flywheel-serving.volumeMounts" -}}{{- end -}}

{{/* Serving follows Kafka without a consumer group: no KEDA trigger (scale on CPU). */}}
{{- define "flywheel-serving.kedaTriggers" -}}{{- end -}}
