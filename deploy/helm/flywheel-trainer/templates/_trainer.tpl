{{/* flywheel-trainer hooks of the shared helpers (see _helpers.tpl). */}}

{{- define "flywheel-trainer.workloadKind" -}}Deployment{{- end -}}

{{- define "flywheel-trainer.usesStore" -}}true{{- end -}}

{{/* The kubernetes executor talks to the API server with the pod's service account token. */}}
{{- define "flywheel-trainer.automountToken" -}}
{{- if eq .Values.executor "kubernetes" -}}true{{- end -}}
{{- end -}}

{{- define "flywheel-trainer.jobNamespace" -}}
{{- .Values.kubernetes.namespace | default .Release.Namespace -}}
{{- end -}}

{{- define "flywheel-trainer.validate" -}}
{{- if not (has .Values.executor (list "local" "kubernetes")) -}}
{{- fail (printf "executor must be local or kubernetes, not %q" .Values.executor) -}}
{{- end -}}
{{- if and (eq .Values.executor "kubernetes") (include "flywheel.storageLocalPath" .) -}}
{{- fail "executor=kubernetes needs object storage (global.storage.uri=s3://...): the training Job's pod mounts no volume, so it cannot see a local store" -}}
{{- end -}}
{{- end -}}

{{/* Env of the training Jobs' pods: the S3 endpoint/region and the user's entries. */}}
{{- define "flywheel-trainer.jobEnv" -}}
{{- $g := .Values.global | default dict -}}
{{- $s3 := ($g.storage | default dict).s3 | default dict -}}
{{- $env := dict -}}
{{- with $s3.endpoint }}{{ $_ := set $env "AWS_ENDPOINT_URL_S3" . }}{{ $_ := set $env "FSSPEC_S3_ENDPOINT_URL" . }}{{ end -}}
{{- with $s3.region }}{{ $_ := set $env "AWS_DEFAULT_REGION" . }}{{ end -}}
{{- $_ := set $env "HOME" "/tmp" -}}
{{- range $k, $v := .Values.kubernetes.env }}{{ $_ := set $env $k (include "flywheel.envValue" $v) }}{{ end -}}
{{- toJson $env -}}
{{- end -}}

{{- define "flywheel-trainer.jobEnvFromSecrets" -}}
{{- $g := .Values.global | default dict -}}
{{- $cred := (($g.storage | default dict).s3 | default dict).credentialsSecretRef | default dict -}}
{{- $list := .Values.kubernetes.envFromSecrets | default list -}}
{{- if and $cred.name (eq ($cred.accessKeyIdKey | default "AWS_ACCESS_KEY_ID") "AWS_ACCESS_KEY_ID") (eq ($cred.secretAccessKeyKey | default "AWS_SECRET_ACCESS_KEY") "AWS_SECRET_ACCESS_KEY") -}}
{{- $list = append $list $cred.name -}}
{{- end -}}
{{- $list | uniq | toJson -}}
{{- end -}}

{{- define "flywheel-trainer.env" -}}
{{ include "flywheel.registryClientEnv" . }}
- name: FLYWHEEL_TRAINER_EXECUTOR
  value: {{ .Values.executor | quote }}
{{- if eq .Values.executor "kubernetes" }}
{{- $k := .Values.kubernetes }}
- name: FLYWHEEL_TRAINER_K8S_NAMESPACE
  value: {{ include "flywheel-trainer.jobNamespace" . | quote }}
- name: FLYWHEEL_TRAINER_K8S_IMAGE
  value: {{ $k.image | default (include "flywheel.image" (dict "image" .Values.image "root" .)) | quote }}
- name: FLYWHEEL_TRAINER_K8S_IMAGE_PULL_POLICY
  value: {{ $k.imagePullPolicy | default "IfNotPresent" | quote }}
{{- with $k.serviceAccount }}
- name: FLYWHEEL_TRAINER_K8S_SERVICE_ACCOUNT
  value: {{ . | quote }}
{{- end }}
{{- $g := .Values.global | default dict }}
{{- $pull := list }}
{{- range concat (.Values.imagePullSecrets | default list) ($g.imagePullSecrets | default list) }}
{{- $pull = append $pull (ternary .name . (kindIs "map" .)) }}
{{- end }}
{{- with $pull | uniq }}
- name: FLYWHEEL_TRAINER_K8S_IMAGE_PULL_SECRETS
  value: {{ . | toJson | quote }}
{{- end }}
- name: FLYWHEEL_TRAINER_K8S_RUN_AS_USER
  value: {{ .Values.podSecurityContext.runAsUser | default 10001 | int | quote }}
- name: FLYWHEEL_TRAINER_K8S_RESOURCES
  value: {{ $k.resources | default dict | toJson | quote }}
- name: FLYWHEEL_TRAINER_K8S_NODE_SELECTOR
  value: {{ $k.nodeSelector | default dict | toJson | quote }}
- name: FLYWHEEL_TRAINER_K8S_TOLERATIONS
  value: {{ $k.tolerations | default list | toJson | quote }}
- name: FLYWHEEL_TRAINER_K8S_ENV
  value: {{ include "flywheel-trainer.jobEnv" . | quote }}
- name: FLYWHEEL_TRAINER_K8S_ENV_FROM_SECRETS
  value: {{ include "flywheel-trainer.jobEnvFromSecrets" . | quote }}
- name: FLYWHEEL_TRAINER_K8S_TTL_S
  value: {{ $k.ttlSecondsAfterFinished | int | quote }}
- name: FLYWHEEL_TRAINER_K8S_START_GRACE_S
  value: {{ include "flywheel.envValue" $k.startGraceSeconds | quote }}
- name: FLYWHEEL_TRAINER_K8S_POLL_S
  value: {{ include "flywheel.envValue" $k.pollSeconds | quote }}
{{- end }}
{{- end -}}

{{- define "flywheel-trainer.volumes" -}}{{- end -}}

{{- define "flywheel-trainer.volumeMounts" -}}{{- end -}}

{{/* Consumer group: services/trainer/src/flywheel_trainer/app.py (group_id="flywheel-trainer"). */}}
{{- define "flywheel-trainer.kedaTriggers" -}}
- group: flywheel-trainer
  topic: data.batch.committed.v1
- group: flywheel-trainer
  topic: retrain.requested.v1
{{- end -}}
