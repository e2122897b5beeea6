{{/* flywheel-monitor hooks of the shared helpers (see _helpers.tpl). */}}

{{- define "flywheel-monitor.workloadKind" -}}StatefulSet{{- end -}}

{{- define "flywheel-monitor.usesStore" -}}true{{- end -}}

{{- define "flywheel-monitor.automountToken" -}}{{- end -}}

{{- define "flywheel-monitor.headlessName" -}}
{{- printf "%s-headless" (include "flywheel.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "flywheel-monitor.env" -}}
{{ include "flywheel.registryClientEnv" . }}
- name: FLYWHEEL_MONITOR_APP_ID
  value: {{ .Values.appId | quote }}
- name: FLYWHEEL_MONITOR_WORKER_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: FLYWHEEL_MONITOR_DATA_DIR
  value: /var/lib/flywheel/monitor
- name: TRANSFORMERS_VERBOSITY
  value: error
{{- end -}}

{{- define "flywheel-monitor.volumes" -}}
{{- if not .Values.persistence.enabled }}
- name: data
  emptyDir: {}
{{- end }}
{{- end -}}

{{- define "flywheel-monitor.volumeMounts" -}}
- name: data
  mountPath: /var/lib/flywheel/monitor
{{- end -}}

{{/* Consumer group: the faust app id, services/monitor/src/flywheel_monitor/app.py app_id(). */}}
{{- define "flywheel-monitor.kedaTriggers" -}}
{{- $g := .Values.global | default dict -}}
{{- $group := printf "%s-%s" (($g.kafka | default dict).topicPrefix | default "flywheel") .Values.appId -}}
- group: {{ $group }}
  topic: predictions.v1
- group: {{ $group }}
  topic: data.labels.v1
{{- end -}}
