{{- /*
Flywheel chart helpers. IDENTICAL in every Flywheel chart (the five service charts and the
umbrella): the source is deploy/helm/lib/_helpers.tpl, copied into each chart by
`python deploy/helm/sync.py` (`--check` fails when a copy differs). Do not edit a copy.

Named templates are global across a parent chart and its subcharts, so everything here is
generic. Chart-specific hooks are named after the component, `flywheel-<component>.<hook>`,
and every service chart defines all of them in templates/_<component>.tpl:
  .env           extra env entries (YAML list)
  .volumes       extra pod volumes (YAML list)
  .volumeMounts  extra container volume mounts (YAML list)
  .usesStore     "true" when the service reads/writes FLYWHEEL_STORAGE_URI
  .kedaTriggers  consumer groups for KEDA: YAML list of {group, topic}
*/ -}}

{{/* The component: "ingest", "registry", ... ("flywheel" for the umbrella chart). */}}
{{- define "flywheel.component" -}}
{{- trimPrefix "flywheel-" .Chart.Name -}}
{{- end -}}

{{/* Chart name: flywheel-<component> (an aliased subchart is named after its alias). */}}
{{- define "flywheel.chartName" -}}
{{- ternary .Chart.Name (printf "flywheel-%s" .Chart.Name) (hasPrefix "flywheel" .Chart.Name) -}}
{{- end -}}

{{- define "flywheel.name" -}}
{{- default (include "flywheel.chartName" .) .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name of chart `name` (flywheel-<component>) in release `release`:
release "flywheel" -> flywheel-<component>; release "flywheel-ingest" (standalone) -> itself;
release "prod" -> prod-flywheel-<component>; release "flywheel-prod" -> flywheel-prod-<component>.
*/}}
{{- define "flywheel.fullnameFor" -}}
{{- $c := trimPrefix "flywheel-" .name -}}
{{- if contains .name .release -}}
{{- .release | trunc 63 | trimSuffix "-" -}}
{{- else if contains "flywheel" .release -}}
{{- printf "%s-%s" .release $c | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .release .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "flywheel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- include "flywheel.fullnameFor" (dict "name" (include "flywheel.name" .) "release" .Release.Name) -}}
{{- end -}}
{{- end -}}

{{/* FLYWHEEL_<COMPONENT>_ : the environment prefix of the service's own settings. */}}
{{- define "flywheel.envPrefix" -}}
{{- printf "FLYWHEEL_%s_" (include "flywheel.component" . | upper | replace "-" "_") -}}
{{- end -}}

{{- define "flywheel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flywheel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "flywheel.labels" -}}
helm.sh/chart: {{ printf "%s-%s" (include "flywheel.chartName" .) .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "flywheel.selectorLabels" . }}
app.kubernetes.io/component: {{ include "flywheel.component" . }}
app.kubernetes.io/part-of: flywheel
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* image reference. Context: dict "image" <image values> "root" $ */}}
{{- define "flywheel.image" -}}
{{- $g := .root.Values.global | default dict -}}
{{- $reg := .image.registry | default $g.imageRegistry | default "" | trimSuffix "/" -}}
{{- $repo := ternary (printf "%s/%s" $reg .image.repository) .image.repository (ne $reg "") -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion | toString -}}
{{- if hasPrefix "sha256:" $tag -}}
{{- printf "%s@%s" $repo $tag -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{- define "flywheel.imagePullSecrets" -}}
{{- $g := .Values.global | default dict -}}
{{- $s := concat (.Values.imagePullSecrets | default list) ($g.imagePullSecrets | default list) | uniq -}}
{{- with $s }}
imagePullSecrets:
{{- range . }}
  - name: {{ if kindIs "map" . }}{{ .name }}{{ else }}{{ . }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "flywheel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "flywheel.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* A value as an env string: integers without exponent, maps/lists as JSON. */}}
{{- define "flywheel.envValue" -}}
{{- if or (kindIs "map" .) (kindIs "slice" .) -}}
{{- toJson . -}}
{{- else if kindIs "float64" . -}}
{{- if eq . (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------- globals -> env ---- */}}

{{/* The registry's base URL: global.registry.url, else the registry service of this release. */}}
{{- define "flywheel.registryUrl" -}}
{{- $g := .Values.global | default dict -}}
{{- $r := $g.registry | default dict -}}
{{- if $r.url -}}
{{- $r.url -}}
{{- else -}}
{{- printf "http://%s:8100" (include "flywheel.fullnameFor" (dict "name" "flywheel-registry" "release" .Release.Name)) -}}
{{- end -}}
{{- end -}}

{{/* Kafka settings (FLYWHEEL_KAFKA_*), secrets through secretKeyRef. */}}
{{- define "flywheel.kafkaEnv" -}}
{{- $g := .Values.global | default dict -}}
{{- $k := $g.kafka | default dict -}}
{{- $sec := $k.security | default dict -}}
{{- $proto := $sec.protocol | default "PLAINTEXT" -}}
{{- $sasl := $sec.sasl | default dict -}}
{{- $saslRef := $sasl.secretRef | default dict -}}
{{- $tls := $sec.tls | default dict -}}
{{- $tlsRef := $tls.secretRef | default dict -}}
{{- if not $k.bootstrap }}{{ fail "global.kafka.bootstrap is required (host:port[,host:port])" }}{{ end -}}
{{- if and (hasPrefix "SASL_" $proto) (not $sasl.mechanism) -}}
{{- fail (printf "global.kafka.security.protocol=%s needs global.kafka.security.sasl.mechanism" $proto) -}}
{{- end -}}
{{- if and $sasl.mechanism (not (hasPrefix "SASL_" $proto)) -}}
{{- fail "global.kafka.security.sasl.mechanism is set but global.kafka.security.protocol is not SASL_PLAINTEXT/SASL_SSL" -}}
{{- end -}}
{{- if and $sasl.mechanism (not $saslRef.name) -}}
{{- fail "SASL needs global.kafka.security.sasl.secretRef.name (a Secret with the user name and password)" -}}
{{- end -}}
- name: FLYWHEEL_KAFKA_BOOTSTRAP
  value: {{ $k.bootstrap | quote }}
- name: FLYWHEEL_KAFKA_TOPIC_PREFIX
  value: {{ $k.topicPrefix | default "flywheel" | quote }}
- name: FLYWHEEL_KAFKA_REPLICATION_FACTOR
  value: {{ $k.replicationFactor | default 1 | int | quote }}
- name: FLYWHEEL_KAFKA_SECURITY_PROTOCOL
  value: {{ $proto | quote }}
{{- with $k.topicRetentionMs }}
- name: FLYWHEEL_KAFKA_TOPIC_RETENTION_MS
  value: {{ toJson . | quote }}
{{- end }}
{{- if $sasl.mechanism }}
- name: FLYWHEEL_KAFKA_SASL_MECHANISM
  value: {{ $sasl.mechanism | quote }}
- name: FLYWHEEL_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $saslRef.name | quote }}
      key: {{ $saslRef.usernameKey | default "username" | quote }}
- name: FLYWHEEL_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $saslRef.name | quote }}
      key: {{ $saslRef.passwordKey | default "password" | quote }}
{{- end }}
{{- if $tlsRef.name }}
{{- if $tlsRef.caKey }}
- name: FLYWHEEL_KAFKA_SSL_CAFILE
  value: {{ printf "/etc/flywheel/kafka-tls/%s" $tlsRef.caKey | quote }}
{{- end }}
{{- if $tlsRef.certKey }}
- name: FLYWHEEL_KAFKA_SSL_CERTFILE
  value: {{ printf "/etc/flywheel/kafka-tls/%s" $tlsRef.certKey | quote }}
{{- end }}
{{- if $tlsRef.keyKey }}
- name: FLYWHEEL_KAFKA_SSL_KEYFILE
  value: {{ printf "/etc/flywheel/kafka-tls/%s" $tlsRef.keyKey | quote }}
{{- end }}
{{- end }}
{{- with $k.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "flywheel.kafkaTlsVolume" -}}
{{- $g := .Values.global | default dict -}}
{{- $ref := ((($g.kafka | default dict).security | default dict).tls | default dict).secretRef | default dict -}}
{{- if $ref.name }}
- name: kafka-tls
  secret:
    secretName: {{ $ref.name | quote }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "flywheel.kafkaTlsVolumeMount" -}}
{{- $g := .Values.global | default dict -}}
{{- $ref := ((($g.kafka | default dict).security | default dict).tls | default dict).secretRef | default dict -}}
{{- if $ref.name }}
- name: kafka-tls
  mountPath: /etc/flywheel/kafka-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* The storage root and whether it is a local path (then a volume is mounted there). */}}
{{- define "flywheel.storageUri" -}}
{{- $g := .Values.global | default dict -}}
{{- ($g.storage | default dict).uri | default "/var/lib/flywheel/store" -}}
{{- end -}}

{{- define "flywheel.storageLocalPath" -}}
{{- $u := include "flywheel.storageUri" . -}}
{{- if hasPrefix "file://" $u -}}
{{- trimPrefix "file://" $u -}}
{{- else if not (contains "://" $u) -}}
{{- $u -}}
{{- end -}}
{{- end -}}

{{/* Storage settings (FLYWHEEL_STORAGE_URI and the S3 client's standard variables). */}}
{{- define "flywheel.storageEnv" -}}
{{- $g := .Values.global | default dict -}}
{{- $s := $g.storage | default dict -}}
{{- $s3 := $s.s3 | default dict -}}
{{- $cred := $s3.credentialsSecretRef | default dict -}}
- name: FLYWHEEL_STORAGE_URI
  value: {{ include "flywheel.storageUri" . | quote }}
{{- if $s3.endpoint }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ $s3.endpoint | quote }}
- name: FSSPEC_S3_ENDPOINT_URL
  value: {{ $s3.endpoint | quote }}
{{- end }}
{{- if $s3.region }}
- name: AWS_DEFAULT_REGION
  value: {{ $s3.region | quote }}
{{- end }}
{{- if $cred.name }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $cred.name | quote }}
      key: {{ $cred.accessKeyIdKey | default "AWS_ACCESS_KEY_ID" | quote }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $cred.name | quote }}
      key: {{ $cred.secretAccessKeyKey | default "AWS_SECRET_ACCESS_KEY" | quote }}
{{- end }}
{{- end -}}

{{- define "flywheel.storeVolume" -}}
{{- $g := .Values.global | default dict -}}
{{- $s := $g.storage | default dict -}}
{{- if include "flywheel.storageLocalPath" . }}
- name: store
{{- if $s.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ $s.existingClaim | quote }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}
{{- end -}}

{{- define "flywheel.storeVolumeMount" -}}
{{- with include "flywheel.storageLocalPath" . }}
- name: store
  mountPath: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Registry URL and token for a service that talks to the registry. */}}
{{- define "flywheel.registryClientEnv" -}}
{{- $g := .Values.global | default dict -}}
{{- $ref := ($g.registry | default dict).tokenSecretRef | default dict -}}
{{- $p := include "flywheel.envPrefix" . -}}
- name: {{ $p }}REGISTRY_URL
  value: {{ include "flywheel.registryUrl" . | quote }}
{{- if $ref.name }}
- name: {{ $p }}REGISTRY_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name | quote }}
      key: {{ $ref.key | default "token" | quote }}
{{- end }}
{{- end -}}

{{/* Every env entry of a service container, before de-duplication (later entries win). */}}
{{- define "flywheel.envRaw" -}}
{{- $g := .Values.global | default dict -}}
{{- $p := include "flywheel.envPrefix" . -}}
{{- $c := include "flywheel.component" . -}}
- name: HOME
  value: /tmp
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: {{ $p }}HOST
  value: "0.0.0.0"
- name: {{ $p }}PORT
  value: {{ .Values.containerPort | int | quote }}
- name: {{ $p }}ENVIRONMENT
  value: {{ $g.environment | default "dev" | quote }}
- name: {{ $p }}LOG_LEVEL
  value: {{ .Values.logLevel | default "INFO" | quote }}
{{ include "flywheel.kafkaEnv" . }}
{{- with ($g.personalKeySecretRef | default dict) }}{{ if .name }}
- name: FLYWHEEL_PERSONAL_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .name | quote }}
      key: {{ .key | default "key" | quote }}
{{- end }}{{ end }}
{{- if include (printf "flywheel-%s.usesStore" $c) . }}
{{ include "flywheel.storageEnv" . }}
{{- end }}
{{- with include (printf "flywheel-%s.env" $c) . | trim }}
{{ . }}
{{- end }}
{{- range $k, $v := .Values.config }}
- name: {{ printf "%s%s" $p ($k | snakecase | upper) }}
  value: {{ include "flywheel.envValue" $v | quote }}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The container's env: envRaw with duplicate names removed (the last definition wins). */}}
{{- define "flywheel.env" -}}
{{- $raw := include "flywheel.envRaw" . | fromYamlArray -}}
{{- $byName := dict -}}
{{- $order := list -}}
{{- range $raw -}}
{{- if not (kindIs "map" .) }}{{ fail (printf "invalid env entry: %v" .) }}{{ end -}}
{{- if not (hasKey $byName .name) }}{{ $order = append $order .name }}{{ end -}}
{{- $_ := set $byName .name . -}}
{{- end -}}
{{- $out := list -}}
{{- range $order }}{{ $out = append $out (get $byName .) }}{{ end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* ---------------------------------------------------------------- workload ---------- */}}

{{/* True ("true") when replicas are managed by an HPA or a KEDA ScaledObject. */}}
{{- define "flywheel.kedaActive" -}}
{{- $k := .Values.keda | default dict -}}
{{- if and $k.enabled (or $k.force (.Capabilities.APIVersions.Has "keda.sh/v1alpha1")) -}}true{{- end -}}
{{- end -}}

{{- define "flywheel.hpaActive" -}}
{{- if and .Values.autoscaling.enabled (not (include "flywheel.kedaActive" .)) -}}true{{- end -}}
{{- end -}}

{{- define "flywheel.autoscaled" -}}
{{- if or (include "flywheel.kedaActive" .) (include "flywheel.hpaActive" .) -}}true{{- end -}}
{{- end -}}

{{- define "flywheel.probe" -}}
httpGet:
  path: {{ .path }}
  port: http
{{- with .initialDelaySeconds }}
initialDelaySeconds: {{ . | int }}
{{- end }}
periodSeconds: {{ .periodSeconds | default 10 | int }}
timeoutSeconds: {{ .timeoutSeconds | default 5 | int }}
failureThreshold: {{ .failureThreshold | default 3 | int }}
successThreshold: 1
{{- end -}}

{{/*
The pod template of a service (Deployment or StatefulSet). Context: the chart's root.
Optional .Values.automountServiceAccountToken-like decision comes from the chart hook
flywheel-<component>.automountToken ("true" or "").
*/}}
{{- define "flywheel.podTemplate" -}}
{{- $c := include "flywheel.component" . -}}
metadata:
  labels:
    {{- include "flywheel.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    kubectl.kubernetes.io/default-container: {{ $c }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "flywheel.serviceAccountName" . }}
  automountServiceAccountToken: {{ include (printf "flywheel-%s.automountToken" $c) . | eq "true" }}
  {{- with (include "flywheel.imagePullSecrets" . | trim) }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . | quote }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds | default 30 | int }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ $c }}
      image: {{ include "flywheel.image" (dict "image" .Values.image "root" .) | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy | default "IfNotPresent" }}
      {{- with .Values.command }}
      command:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.args }}
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.containerPort | int }}
          protocol: TCP
      env:
        {{- include "flywheel.env" . | nindent 8 }}
      {{- with .Values.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.probes }}
      {{- if .startup.enabled }}
      startupProbe:
        {{- include "flywheel.probe" .startup | nindent 8 }}
      {{- end }}
      {{- if .liveness.enabled }}
      livenessProbe:
        {{- include "flywheel.probe" .liveness | nindent 8 }}
      {{- end }}
      {{- if .readiness.enabled }}
      readinessProbe:
        {{- include "flywheel.probe" .readiness | nindent 8 }}
      {{- end }}
      {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- with (include "flywheel.kafkaTlsVolumeMount" . | trim) }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- if include (printf "flywheel-%s.usesStore" $c) . }}
        {{- with (include "flywheel.storeVolumeMount" . | trim) }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- end }}
        {{- with (include (printf "flywheel-%s.volumeMounts" $c) . | trim) }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        {{- with .Values.tmpVolume.sizeLimit }}
        sizeLimit: {{ . }}
        {{- end }}
        {{- with .Values.tmpVolume.medium }}
        medium: {{ . }}
        {{- end }}
    {{- with (include "flywheel.kafkaTlsVolume" . | trim) }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- if include (printf "flywheel-%s.usesStore" $c) . }}
    {{- with (include "flywheel.storeVolume" . | trim) }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- end }}
    {{- with (include (printf "flywheel-%s.volumes" $c) . | trim) }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- tpl (toYaml .) $ | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- objects ----------- */}}

{{- define "flywheel.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "flywheel.fullname" . }}
  labels:
    {{- include "flywheel.labels" . | nindent 4 }}
  {{- with .Values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .Values.service.type }}
  selector:
    {{- include "flywheel.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .Values.service.port | int }}
      targetPort: http
      protocol: TCP
      {{- if and (eq .Values.service.type "NodePort") .Values.service.nodePort }}
      nodePort: {{ .Values.service.nodePort | int }}
      {{- end }}
{{- end -}}

{{- define "flywheel.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "flywheel.serviceAccountName" . }}
  labels:
    {{- include "flywheel.labels" . | nindent 4 }}
  {{- with .Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end }}
{{- end -}}

{{/* Kind of the workload ("Deployment" or "StatefulSet"): the chart hook flywheel-<c>.workloadKind. */}}
{{- define "flywheel.hpa" -}}
{{- if include "flywheel.hpaActive" . -}}
{{- $a := .Values.autoscaling -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "flywheel.fullname" . }}
  labels:
    {{- include "flywheel.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: {{ include (printf "flywheel-%s.workloadKind" (include "flywheel.component" .)) . }}
    name: {{ include "flywheel.fullname" . }}
  minReplicas: {{ $a.minReplicas | int }}
  maxReplicas: {{ $a.maxReplicas | int }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage | int }}
    {{- with $a.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ . | int }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "flywheel.pdb" -}}
{{- $p := .Values.podDisruptionBudget -}}
{{- if and $p.enabled (or (gt (.Values.replicaCount | int) 1) (include "flywheel.autoscaled" .)) -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "flywheel.fullname" . }}
  labels:
    {{- include "flywheel.labels" . | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" $p.minAvailable) }}
  minAvailable: {{ $p.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $p.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "flywheel.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{- define "flywheel.networkPolicy" -}}
{{- $n := .Values.networkPolicy -}}
{{- if $n.enabled -}}
{{- $from := list -}}
{{- if $n.allowSameNamespace }}{{ $from = append $from (dict "podSelector" dict) }}{{ end -}}
{{- $from = concat $from ($n.from | default list) -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "flywheel.fullname" . }}
  labels:
    {{- include "flywheel.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "flywheel.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    - Egress
  ingress:
    - ports:
        - port: http
          protocol: TCP
      {{- with $from }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  egress:
    {{- if $n.egress }}
    {{- toYaml $n.egress | nindent 4 }}
    {{- else }}
    - {}
    {{- end }}
{{- end }}
{{- end -}}

{{- define "flywheel.serviceMonitor" -}}
{{- $m := .Values.serviceMonitor -}}
{{- if and $m.enabled (or $m.force (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "flywheel.fullname" . }}
  labels:
    {{- include "flywheel.labels" . | nindent 4 }}
    {{- with $m.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "flywheel.selectorLabels" . | nindent 6 }}
    matchExpressions:
      - key: flywheel.dev/headless
        operator: DoesNotExist
  namespaceSelector:
    matchNames:
      - {{ .Release.Namespace }}
  endpoints:
    - port: http
      path: /metrics
      interval: {{ $m.interval | default "30s" }}
      scrapeTimeout: {{ $m.scrapeTimeout | default "10s" }}
      relabelings:
        # deploy/prometheus/flywheel-rules.yaml expects scrape jobs named flywheel-<service>.
        - action: replace
          targetLabel: job
          replacement: {{ printf "flywheel-%s" (include "flywheel.component" .) }}
        {{- with $m.relabelings }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $m.metricRelabelings }}
      metricRelabelings:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- end -}}

{{/* PrometheusRule from the chart's files/prometheus-rules.yaml (generated by sync.py). */}}
{{- define "flywheel.prometheusRule" -}}
{{- $r := .Values.prometheusRule -}}
{{- if and $r.enabled (or $r.force (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
{{- $groups := (.Files.Get "files/prometheus-rules.yaml" | fromYaml).groups | default list -}}
{{- $groups = concat $groups ($r.extraGroups | default list) -}}
{{- if $groups -}}
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: {{ include "flywheel.fullname" . }}
  labels:
    {{- include "flywheel.labels" . | nindent 4 }}
    {{- with $r.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  groups:
    {{- toYaml $groups | nindent 4 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* KEDA's name for a SASL mechanism. */}}
{{- define "flywheel.kedaSasl" -}}
{{- $m := . | upper -}}
{{- if eq $m "PLAIN" }}plaintext{{ else if eq $m "SCRAM-SHA-256" }}scram_sha256{{ else if eq $m "SCRAM-SHA-512" }}scram_sha512{{ else if eq $m "OAUTHBEARER" }}oauthbearer{{ else if eq $m "GSSAPI" }}gssapi{{ else }}{{ fail (printf "no KEDA equivalent of SASL mechanism %s" .) }}{{ end -}}
{{- end -}}

{{/* KEDA ScaledObject on the Kafka lag of the service's consumer groups (+ TriggerAuthentication). */}}
{{- define "flywheel.scaledObject" -}}
{{- if include "flywheel.kedaActive" . -}}
{{- $k := .Values.keda -}}
{{- $c := include "flywheel.component" . -}}
{{- $g := .Values.global | default dict -}}
{{- $kafka := $g.kafka | default dict -}}
{{- $sec := $kafka.security | default dict -}}
{{- $proto := $sec.protocol | default "PLAINTEXT" -}}
{{- $sasl := $sec.sasl | default dict -}}
{{- $saslRef := $sasl.secretRef | default dict -}}
{{- $tlsRef := ($sec.tls | default dict).secretRef | default dict -}}
{{- $needAuth := or $sasl.mechanism $tlsRef.name -}}
{{- $triggers := include (printf "flywheel-%s.kedaTriggers" $c) . | fromYamlArray -}}
{{- if $needAuth }}
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: {{ include "flywheel.fullname" . }}-kafka
  labels:
    {{- include "flywheel.labels" . | nindent 4 }}
spec:
  secretTargetRef:
    {{- if $sasl.mechanism }}
    - parameter: username
      name: {{ $saslRef.name | quote }}
      key: {{ $saslRef.usernameKey | default "username" | quote }}
    - parameter: password
      name: {{ $saslRef.name | quote }}
      key: {{ $saslRef.passwordKey | default "password" | quote }}
    {{- end }}
    {{- if and $tlsRef.name $tlsRef.caKey }}
    - parameter: ca
      name: {{ $tlsRef.name | quote }}
      key: {{ $tlsRef.caKey | quote }}
    {{- end }}
    {{- if and $tlsRef.name $tlsRef.certKey $tlsRef.keyKey }}
    - parameter: cert
      name: {{ $tlsRef.name | quote }}
      key: {{ $tlsRef.certKey | quote }}
    - parameter: key
      name: {{ $tlsRef.name | quote }}
      key: {{ $tlsRef.keyKey | quote }}
    {{- end }}
---
{{- end }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "flywheel.fullname" . }}
  labels:
    {{- include "flywheel.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: {{ include (printf "flywheel-%s.workloadKind" $c) . }}
    name: {{ include "flywheel.fullname" . }}
  minReplicaCount: {{ $k.minReplicas | int }}
  maxReplicaCount: {{ $k.maxReplicas | int }}
  pollingInterval: {{ $k.pollingInterval | default 15 | int }}
  cooldownPeriod: {{ $k.cooldownPeriod | default 300 | int }}
  triggers:
    {{- range $triggers }}
    - type: kafka
      name: {{ printf "lag-%s" (.topic | replace "." "-") | trunc 63 | trimSuffix "-" }}
      metadata:
        bootstrapServers: {{ $kafka.bootstrap | quote }}
        consumerGroup: {{ .group | quote }}
        topic: {{ printf "%s.%s" ($kafka.topicPrefix | default "flywheel") .topic | quote }}
        lagThreshold: {{ $k.lagThreshold | int | quote }}
        {{- with $k.activationLagThreshold }}
        activationLagThreshold: {{ . | int | quote }}
        {{- end }}
        offsetResetPolicy: earliest
        allowIdleConsumers: "false"
        {{- if $sasl.mechanism }}
        sasl: {{ include "flywheel.kedaSasl" $sasl.mechanism | quote }}
        {{- end }}
        {{- if hasSuffix "SSL" $proto }}
        tls: enable
        {{- end }}
      {{- if $needAuth }}
      authenticationRef:
        name: {{ include "flywheel.fullname" $ }}-kafka
      {{- end }}
    {{- end }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- NOTES ------------- */}}

{{/* What to check next, for one service chart. */}}
{{- define "flywheel.notes" -}}
{{- $c := include "flywheel.component" . -}}
{{- $full := include "flywheel.fullname" . -}}
{{- $kind := include (printf "flywheel-%s.workloadKind" $c) . | lower -}}
Flywheel {{ $c }} ({{ $full }}) in namespace {{ .Release.Namespace }}.

1. Wait until the pods are ready (/readyz: Kafka reachable{{ if ne $c "registry" }}, registry answers{{ end }}):
     kubectl -n {{ .Release.Namespace }} rollout status {{ $kind }}/{{ $full }}
     kubectl -n {{ .Release.Namespace }} get pods -l app.kubernetes.io/instance={{ .Release.Name }},app.kubernetes.io/name={{ include "flywheel.name" . }}

2. Look at it:
     kubectl -n {{ .Release.Namespace }} port-forward svc/{{ $full }} {{ .Values.service.port | int }}:{{ .Values.service.port | int }}
     curl -s localhost:{{ .Values.service.port | int }}/readyz; curl -s localhost:{{ .Values.service.port | int }}/metrics | head
   The whole platform at a glance (every service, consumer lag, models, latest decisions):
     kubectl -n {{ .Release.Namespace }} exec {{ $kind }}/{{ $full }} -- flywheel status --{{ $c }}-url http://127.0.0.1:{{ .Values.containerPort | int }} ...
   (pass each service's --<service>-url http://<service>:<port>; Kafka is read from FLYWHEEL_KAFKA_BOOTSTRAP).

3. Metrics and dashboards: /metrics on port {{ .Values.service.port | int }}.
{{- if .Values.serviceMonitor.enabled }}
{{- if or .Values.serviceMonitor.force (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}
   ServiceMonitor {{ $full }} created (scrape job flywheel-{{ $c }}).
{{- else }}
   WARNING: serviceMonitor.enabled but the monitoring.coreos.com/v1 API is absent: no ServiceMonitor rendered.
{{- end }}
{{- end }}
   Grafana dashboards and alert rules: deploy/grafana/ and deploy/prometheus/ in the Flywheel repository.
{{- if and (.Values.keda | default dict).enabled (not (include "flywheel.kedaActive" .)) }}

WARNING: keda.enabled but the keda.sh/v1alpha1 API is absent: no ScaledObject rendered (set keda.force to render anyway).
{{- end }}
{{- if not (include "flywheel.storageLocalPath" . | eq "") }}
{{- if and (include (printf "flywheel-%s.usesStore" $c) .) (not ((.Values.global | default dict).storage | default dict).existingClaim) }}

WARNING: storage is a local path ({{ include "flywheel.storageUri" . }}) on an emptyDir: it is lost with the pod and
not shared with the other services. Use global.storage.uri=s3://... (production) or global.storage.existingClaim (a shared PVC).
{{- end }}
{{- end }}
{{- end -}}
