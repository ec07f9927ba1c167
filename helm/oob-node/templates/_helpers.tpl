{{/*
Names, labels and shared snippets. Selector labels never contain the chart version: a
Deployment's selector is immutable, so a chart upgrade must not change it.
*/}}

{{- define "oob-node.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "oob-node.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Namespace of the node objects: namespaceOverride, else the release namespace. */}}
{{- define "oob-node.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Namespace of the Istio objects (gateway or workload namespace). */}}
{{- define "oob-node.istioNamespace" -}}
{{- if eq .Values.istio.mode "sidecar" -}}
{{- .Values.istio.sidecar.namespace -}}
{{- else -}}
{{- .Values.istio.gateway.namespace -}}
{{- end -}}
{{- end -}}

{{/* Workload labels the EnvoyFilter selects. */}}
{{- define "oob-node.istioWorkloadLabels" -}}
{{- if eq .Values.istio.mode "sidecar" -}}
{{- toYaml .Values.istio.sidecar.workloadLabels -}}
{{- else -}}
{{- toYaml .Values.istio.gateway.workloadLabels -}}
{{- end -}}
{{- end -}}

{{- define "oob-node.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "processing"). */}}
{{- define "oob-node.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oob-node.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every label of one component's objects: (dict "ctx" $ "component" "processing"). */}}
{{- define "oob-node.labels" -}}
helm.sh/chart: {{ include "oob-node.chart" .ctx }}
{{ include "oob-node.selectorLabels" . }}
app.kubernetes.io/part-of: oob-node
{{- with .ctx.Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "oob-node.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "oob-node.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "oob-node.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "oob-node.redisImage" -}}
{{- if .Values.redis.image.digest -}}
{{- printf "%s@%s" .Values.redis.image.repository .Values.redis.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.redis.image.repository .Values.redis.image.tag -}}
{{- end -}}
{{- end -}}

{{/* Object names. */}}
{{- define "oob-node.processingName" -}}{{ include "oob-node.fullname" . }}-processing{{- end -}}
{{- define "oob-node.aggregationName" -}}{{ include "oob-node.fullname" . }}-aggregation{{- end -}}
{{- define "oob-node.redisName" -}}{{ include "oob-node.fullname" . }}-valkey{{- end -}}
{{- define "oob-node.configName" -}}{{ include "oob-node.fullname" . }}-config{{- end -}}
{{- define "oob-node.luaName" -}}{{ include "oob-node.fullname" . }}-lua{{- end -}}

{{/* FQDN of the receiver Service (mirror and batch ports). */}}
{{- define "oob-node.receiverHost" -}}
{{- printf "%s.%s.svc.cluster.local" (include "oob-node.processingName" .) (include "oob-node.namespace" .) -}}
{{- end -}}

{{/* Secret holding the tokens. */}}
{{- define "oob-node.tokenSecretName" -}}
{{- default (printf "%s-tokens" (include "oob-node.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* Secret holding the Redis URL (external) or the Valkey password (bundled). */}}
{{- define "oob-node.redisSecretName" -}}
{{- if .Values.externalRedis.enabled -}}
{{- default (printf "%s-redis" (include "oob-node.fullname" .)) .Values.externalRedis.existingSecret -}}
{{- else -}}
{{- default (printf "%s-redis" (include "oob-node.fullname" .)) .Values.redis.existingSecret -}}
{{- end -}}
{{- end -}}

{{/*
A secret value that is generated once and then kept: the explicit value, else the value
already stored in the Secret of a previous release (lookup; empty when rendering offline),
else randAlphaNum 40. The result is memoised in .Values so that every template of one render
(the Secret and the EnvoyFilter that carries the batch token) sees the same value.
Call: (dict "ctx" $ "key" "batch-token" "value" .Values.auth.batchToken "secret" NAME)
*/}}
{{- define "oob-node.secretValue" -}}
{{- $memo := .ctx.Values._generated | default dict -}}
{{- if not (hasKey $memo .key) -}}
{{- $v := .value -}}
{{- if not $v -}}
{{- $old := lookup "v1" "Secret" (include "oob-node.namespace" .ctx) .secret -}}
{{- if and $old $old.data (hasKey $old.data .key) -}}
{{- $v = index $old.data .key | b64dec -}}
{{- else if .mustExist -}}
{{- fail (printf "%s: Secret %s with key %s must exist before install (the chart needs its value)" .mustExist .secret .key) -}}
{{- else -}}
{{- $v = randAlphaNum 40 -}}
{{- end -}}
{{- end -}}
{{- $_ := set $memo .key $v -}}
{{- $_ := set .ctx.Values "_generated" $memo -}}
{{- end -}}
{{- index $memo .key -}}
{{- end -}}

{{- define "oob-node.batchToken" -}}
{{- include "oob-node.secretValue" (dict "ctx" . "key" .Values.auth.batchTokenKey "value" .Values.auth.batchToken "secret" (include "oob-node.tokenSecretName" .) "mustExist" (ternary "auth.existingSecret" "" (not (empty .Values.auth.existingSecret)))) -}}
{{- end -}}

{{- define "oob-node.apiToken" -}}
{{- include "oob-node.secretValue" (dict "ctx" . "key" .Values.auth.apiTokenKey "value" .Values.auth.apiToken "secret" (include "oob-node.tokenSecretName" .)) -}}
{{- end -}}

{{- define "oob-node.redisPassword" -}}
{{- include "oob-node.secretValue" (dict "ctx" . "key" "redis-password" "value" .Values.redis.password "secret" (include "oob-node.redisSecretName" .)) -}}
{{- end -}}

{{/* Env of every node container: Redis URL from a Secret, listeners from `ports`. */}}
{{- define "oob-node.env" -}}
{{- if .Values.externalRedis.enabled -}}
- name: OOB_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "oob-node.redisSecretName" . }}
      key: {{ .Values.externalRedis.existingSecretKey }}
{{- else -}}
- name: OOB_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "oob-node.redisSecretName" . }}
      key: redis-password
# the kubelet expands $(OOB_REDIS_PASSWORD): the pod spec never holds the password
- name: OOB_REDIS_URL
  value: {{ printf "redis://:$(OOB_REDIS_PASSWORD)@%s:6379/0" (include "oob-node.redisName" .) | quote }}
{{- end }}
- name: OOB_CONFIG
  value: /etc/oob-node/config.yaml
- name: OOB_DATA_DIR
  value: /data
- name: OOB_MIRROR_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.ports.mirror) | quote }}
- name: OOB_BATCH_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.ports.batch) | quote }}
- name: OOB_CONSOLE_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.ports.console) | quote }}
- name: OOB_PROCESSING_METRICS_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.ports.metrics) | quote }}
{{- end -}}

{{/* Volumes of every node pod: config, tokens (files), writable /data and /tmp. */}}
{{- define "oob-node.volumes" -}}
- name: config
  configMap:
    name: {{ include "oob-node.configName" . }}
- name: tokens
  secret:
    secretName: {{ include "oob-node.tokenSecretName" . }}
    defaultMode: 0440
- name: data
  emptyDir:
    sizeLimit: {{ .Values.dataSizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end -}}

{{- define "oob-node.volumeMounts" -}}
- name: config
  mountPath: /etc/oob-node
  readOnly: true
- name: tokens
  mountPath: /var/run/secrets/oob-node
  readOnly: true
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* HTTP probes on one port: (dict "ctx" $ "port" "batch"). */}}
{{- define "oob-node.probes" -}}
{{- $p := .ctx.Values.probes -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  initialDelaySeconds: {{ $p.liveness.initialDelaySeconds }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}}
  initialDelaySeconds: {{ $p.readiness.initialDelaySeconds }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end -}}

{{/* Pod annotations that roll pods when the config or the tokens change. */}}
{{- define "oob-node.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.auth.existingSecret }}
checksum/tokens: {{ printf "%s/%s" (include "oob-node.batchToken" .) (include "oob-node.apiToken" .) | sha256sum }}
{{- end }}
{{- end -}}

{{/*
The Lua filter's inline code: require the plugin from package.path (the mounted ConfigMap)
and configure it from values. Strings are quoted with Go's %q, a valid Lua literal for the
printable ASCII the schema allows; whole numbers are printed as integers.
Neither a missing module nor a bad option (configure() returning nil) makes Envoy reject
the listener: the plugin stays disabled and says so once per worker in Envoy's log.
*/}}
{{- define "oob-node.luaInline" -}}
{{- $cfg := deepCopy .Values.istio.plugin.config -}}
{{- $_ := set $cfg "cluster" (include "oob-node.pluginCluster" .) -}}
{{- $_ := set $cfg "token" (include "oob-node.batchToken" .) -}}
-- oob-node Lua plugin, rendered by the oob-node Helm chart (modules: mounted ConfigMaps).
-- modules sha256: {{ include "oob-node.luaChecksum" . }}
-- Modules not mounted (yet): stay inert and log once per worker, rather than make Envoy
-- reject the whole listener update of this proxy.
local loaded, oob = pcall(require, "oob_mirror")
local load_error = not loaded and tostring(oob) or nil
if loaded then
  oob.configure({
{{- range $k := keys $cfg | sortAlpha }}
{{- $v := index $cfg $k }}
    {{ $k }} = {{ include "oob-node.luaValue" $v }},
{{- end }}
  })
end
function envoy_on_request(handle)
  if loaded then return oob.on_request(handle) end
  if load_error then
    handle:logErr("oob-node plugin not loaded: " .. load_error)
    load_error = nil
  end
end
function envoy_on_response(handle)
  if loaded then return oob.on_response(handle) end
end
{{- end -}}

{{- define "oob-node.luaValue" -}}
{{- if kindIs "string" . -}}
{{- quote . -}}
{{- else if kindIs "map" . -}}
{ {{- range $k := keys . | sortAlpha }}[{{ quote $k }}] = {{ include "oob-node.luaValue" (index $ $k) }}, {{ end -}} }
{{- else if kindIs "bool" . -}}
{{- ternary "true" "false" . -}}
{{- else if and (kindIs "float64" .) (eq . (float64 (int64 .))) -}}
{{- int64 . -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{- define "oob-node.pluginCluster" -}}
{{- if .Values.istio.plugin.useMeshCluster -}}
{{- printf "outbound|%d||%s" (int .Values.ports.batch) (include "oob-node.receiverHost" .) -}}
{{- else -}}
{{- .Values.istio.plugin.clusterName -}}
{{- end -}}
{{- end -}}

{{/*
Lua ConfigMaps: one per directory of lua/ (ConfigMap keys cannot hold a "/"). Returns a
JSON list of {name, dir, files: [base names]} so the ConfigMap template, the projected
volume and the tests agree on one layout. dir "" is the root of package.path.
*/}}
{{- define "oob-node.luaDirs" -}}
{{- $dirs := dict -}}
{{- range $path, $_ := .Files.Glob "files/lua/**.lua" -}}
{{- $rel := trimPrefix "files/lua/" $path -}}
{{- $dir := dir $rel -}}
{{- if eq $dir "." }}{{ $dir = "" }}{{ end -}}
{{- $list := get $dirs $dir | default list -}}
{{- $_ := set $dirs $dir (append $list (base $rel)) -}}
{{- end -}}
{{- $out := list -}}
{{- range $dir := keys $dirs | sortAlpha -}}
{{- $name := include "oob-node.luaName" $ -}}
{{- if $dir }}{{ $name = printf "%s-%s" $name ($dir | replace "/" "-" | replace "_" "-") }}{{ end -}}
{{- $out = append $out (dict "name" $name "dir" $dir "files" (index $dirs $dir | sortAlpha)) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* One digest of every plugin file (path and content), shown in the inline code. */}}
{{- define "oob-node.luaChecksum" -}}
{{- $all := list -}}
{{- range $path, $_ := .Files.Glob "files/lua/**.lua" -}}
{{- $all = append $all (printf "%s\n%s" $path ($.Files.Get $path | sha256sum)) -}}
{{- end -}}
{{- $all | sortAlpha | join "\n" | sha256sum -}}
{{- end -}}

{{/* The projected volume that lays the Lua ConfigMaps out as package.path expects. */}}
{{- define "oob-node.luaVolume" -}}
{{- $sources := list -}}
{{- range $d := include "oob-node.luaDirs" . | fromJsonArray -}}
{{- $items := list -}}
{{- range $f := $d.files -}}
{{- $items = append $items (dict "key" $f "path" (ternary (printf "%s/%s" $d.dir $f) $f (ne $d.dir ""))) -}}
{{- end -}}
{{- $sources = append $sources (dict "configMap" (dict "name" $d.name "items" $items)) -}}
{{- end -}}
{{- toJson (dict "projected" (dict "sources" $sources)) -}}
{{- end -}}

{{/* Istio sidecar-injector annotations that mount the plugin into a proxy. */}}
{{- define "oob-node.luaUserVolume" -}}
{{- toJson (dict "oob-node-lua" (include "oob-node.luaVolume" . | fromJson)) -}}
{{- end -}}
{{- define "oob-node.luaUserVolumeMount" -}}
{{- toJson (dict "oob-node-lua" (dict "mountPath" .Values.istio.plugin.luaPath "readOnly" true)) -}}
{{- end -}}
