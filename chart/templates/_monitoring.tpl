{{/*
Helpers of the optional monitoring objects: the Grafana dashboard ConfigMap and the PrometheusRule.
*/}}

{{/*
Label matchers (no braces) that every selector of the rules carries: prometheusRule.selector, else the
series the chart's own ServiceMonitor scrapes (the Prometheus Operator sets `job` to the Service's name
and `namespace` to its namespace).
*/}}
{{- define "fleet-webhook.ruleSelector" -}}
{{- if .Values.prometheusRule.selector -}}
{{- .Values.prometheusRule.selector -}}
{{- else -}}
{{- printf "job=%q,namespace=%q" (include "fleet-webhook.serviceName" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/*
Seconds in a duration of one number and one unit (s, m, h, d, w; values.schema.json allows no other
form), for PromQL arithmetic, which takes no durations.
*/}}
{{- define "fleet-webhook.seconds" -}}
{{- $text := toString . -}}
{{- $unit := regexReplaceAll "^[0-9]+" $text "" -}}
{{- $factor := get (dict "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800) $unit -}}
{{- if not $factor -}}
{{- fail (printf "%q is not a duration of one number and one unit (s, m, h, d, w)" $text) -}}
{{- end -}}
{{- mul (regexFind "^[0-9]+" $text | atoi) $factor -}}
{{- end -}}

{{/* Name of the dashboard ConfigMap: the release namespace is in it, since it may live in a shared namespace. */}}
{{- define "fleet-webhook.dashboardName" -}}
{{- printf "%s-%s" .Release.Namespace (include "fleet-webhook.fullname" .) | trunc 52 | trimSuffix "-" -}}-dashboard
{{- end -}}
