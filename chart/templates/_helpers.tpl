{{/*
Names. Kubernetes object names (and label values) are limited to 63 characters: everything is truncated
there and a trailing "-" left by the cut is removed.
*/}}
{{- define "fleet-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fleet-webhook.fullname" -}}
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

{{/* Cluster-scoped names carry the namespace: two releases of the same name in two namespaces must not collide. */}}
{{- define "fleet-webhook.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "fleet-webhook.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A suffixed name, e.g. (list . "secrets"), truncated so the suffix always survives. */}}
{{- define "fleet-webhook.suffixed" -}}
{{- $root := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $base := include "fleet-webhook.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base $suffix -}}
{{- end -}}

{{- define "fleet-webhook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fleet-webhook.serviceName" -}}
{{- default (include "fleet-webhook.fullname" .) .Values.service.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Service for /metrics, apart from the webhook Service (service-metrics.yaml). */}}
{{- define "fleet-webhook.metricsServiceName" -}}
{{- include "fleet-webhook.suffixed" (list . "metrics") -}}
{{- end -}}

{{/* The label only the metrics Service carries: what the ServiceMonitor selects. */}}
{{- define "fleet-webhook.metricsServiceLabel" -}}
fleet-webhook.cattle.io/service: metrics
{{- end -}}

{{- define "fleet-webhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fleet-webhook.fullname" .) .Values.serviceAccount.name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "fleet-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fleet-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "fleet-webhook.labels" -}}
helm.sh/chart: {{ include "fleet-webhook.chart" . }}
{{ include "fleet-webhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: webhook-receiver
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "fleet-webhook.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
What the controller config implies for RBAC. The defaults here are the schema's defaults
(schema/config.schema.json): a missing key behaves exactly like the controller treats it.
*/}}

{{/* Watched namespaces as a JSON list; [] means every namespace (cluster-wide access). */}}
{{- define "fleet-webhook.watchNamespaces" -}}
{{- $watch := (.Values.config.watch | default dict) -}}
{{- toJson (($watch.namespaces | default list) | uniq | sortAlpha) -}}
{{- end -}}

{{/* "true" when the controller may set spec.pollingInterval (config.polling.manage, default true). */}}
{{- define "fleet-webhook.managesPolling" -}}
{{- $polling := (.Values.config.polling | default dict) -}}
{{- if or (not (hasKey $polling "manage")) $polling.manage -}}true{{- end -}}
{{- end -}}

{{/* "true" when more than one receiver pod may run at a time outside a rollout (replicaCount or the HPA). */}}
{{- define "fleet-webhook.severalReplicas" -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) -}}true{{- end -}}
{{- end -}}

{{/*
"true" when the receiver keeps the webhook-ledger annotation (FLEET_WEBHOOK_SHARED_ORDER):
settings.sharedOrder when set, else exactly when several replicas may run.
*/}}
{{- define "fleet-webhook.sharedOrder" -}}
{{- if kindIs "invalid" .Values.settings.sharedOrder -}}
{{- include "fleet-webhook.severalReplicas" . -}}
{{- else if .Values.settings.sharedOrder -}}true{{- end -}}
{{- end -}}

{{/* "true" when a GitRepo's spec.webhookSecret is honoured (config.secrets.gitRepoSecrets, default true). */}}
{{- define "fleet-webhook.gitRepoSecrets" -}}
{{- $secrets := (.Values.config.secrets | default dict) -}}
{{- if or (not (hasKey $secrets "gitRepoSecrets")) $secrets.gitRepoSecrets -}}true{{- end -}}
{{- end -}}

{{/*
Namespaces where a GitRepo's spec.webhookSecret may be read, as a JSON list; ["*"] means every namespace.
Only GitRepos a route serves are ever updated, so: the union of routes[].namespaces when every route
lists some (the default route `/` lists none), kept to config.watch.namespaces when that is set; else
config.watch.namespaces; else every namespace.
*/}}
{{- define "fleet-webhook.gitRepoSecretNamespaces" -}}
{{- $watched := include "fleet-webhook.watchNamespaces" . | fromJsonArray -}}
{{- $routes := .Values.config.routes | default (list (dict "path" "/")) -}}
{{- $served := list -}}
{{- $everywhere := false -}}
{{- range $route := $routes -}}
{{- if $route.namespaces -}}
{{- $served = concat $served $route.namespaces -}}
{{- else -}}
{{- $everywhere = true -}}
{{- end -}}
{{- end -}}
{{- if not $everywhere -}}
{{- $kept := list -}}
{{- range $ns := ($served | uniq | sortAlpha) -}}
{{- if or (not $watched) (has $ns $watched) -}}
{{- $kept = append $kept $ns -}}
{{- end -}}
{{- end -}}
{{- toJson $kept -}}
{{- else if $watched -}}
{{- toJson $watched -}}
{{- else -}}
{{- toJson (list "*") -}}
{{- end -}}
{{- end -}}

{{/*
The global secret source as a JSON object {"name", "namespace"}, or {} when it is a directory.
Default: Secret gitjob-webhook in the controller's (= release) namespace.
*/}}
{{- define "fleet-webhook.globalSecret" -}}
{{- $secrets := (.Values.config.secrets | default dict) -}}
{{- $source := $secrets.source | default (dict "kubernetes" (dict "name" "gitjob-webhook")) -}}
{{- if $source.kubernetes -}}
{{- toJson (dict "name" ($source.kubernetes.name | default "gitjob-webhook") "namespace" ($source.kubernetes.namespace | default .Release.Namespace)) -}}
{{- else -}}
{{- toJson dict -}}
{{- end -}}
{{- end -}}

{{/*
Every Secret the controller reads by name, as JSON {namespace: [names]}: the global source and each
route's own `secret.kubernetes` (an empty namespace means the controller's namespace).
*/}}
{{- define "fleet-webhook.namedSecrets" -}}
{{- $byNamespace := dict -}}
{{- $global := include "fleet-webhook.globalSecret" . | fromJson -}}
{{- if $global.name -}}
{{- $_ := set $byNamespace $global.namespace (list $global.name) -}}
{{- end -}}
{{- range $route := (.Values.config.routes | default list) -}}
{{- if and $route.secret $route.secret.kubernetes -}}
{{- $ns := $route.secret.kubernetes.namespace | default $.Release.Namespace -}}
{{- $names := get $byNamespace $ns | default list -}}
{{- $_ := set $byNamespace $ns (append $names $route.secret.kubernetes.name | uniq | sortAlpha) -}}
{{- end -}}
{{- end -}}
{{- toJson $byNamespace -}}
{{- end -}}
