{{/*
Rules of the controller config that JSON Schema cannot express (controller/config.py
_semantic_problems). values.schema.json catches everything else; these make `helm install`/`upgrade`
fail with the field's path instead of shipping a config the receiver would refuse to load (at start-up:
crash loop; on reload: the previous config keeps serving). Each message starts with the field's path.
*/}}
{{- define "fleet-webhook.validateConfig" -}}
{{- $config := .Values.config -}}
{{- $watched := include "fleet-webhook.watchNamespaces" . | fromJsonArray -}}
{{- $providers := $config.providers | default dict -}}
{{- $seen := dict -}}
{{- range $i, $route := ($config.routes | default list) -}}
{{- $key := printf "%s|%v" $route.path (default false $route.prefix) -}}
{{- if hasKey $seen $key -}}
{{- fail (printf "config.routes[%d].path: route %q is already defined at config.routes[%v]" $i $route.path (get $seen $key)) -}}
{{- end -}}
{{- $_ := set $seen $key $i -}}
{{- if $watched -}}
{{- range $ns := ($route.namespaces | default list) -}}
{{- if not (has $ns $watched) -}}
{{- fail (printf "config.routes[%d].namespaces: namespace %q is not watched (add it to config.watch.namespaces)" $i $ns) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $name := ($route.providers | default list) -}}
{{- $provider := get $providers $name | default dict -}}
{{- if and (hasKey $provider "enabled") (not $provider.enabled) -}}
{{- fail (printf "config.routes[%d].providers: provider %q is disabled in config.providers.%s.enabled" $i $name $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $disabled := 0 -}}
{{- range $name, $provider := $providers -}}
{{- if and (hasKey $provider "enabled") (not $provider.enabled) -}}
{{- $disabled = add1 $disabled -}}
{{- end -}}
{{- end -}}
{{- if ge (int $disabled) 8 -}}
{{- fail "config.providers: every provider is disabled; enable at least one" -}}
{{- end -}}
{{- $relay := .Values.relay -}}
{{- if and $relay.role (not $relay.url) (not (include "fleet-webhook.relayUrlInExtraEnv" .)) -}}
{{- fail (printf "relay.url: relay.role %q needs the NATS URL (or FLEET_WEBHOOK_RELAY_%s in extraEnv)" $relay.role (upper $relay.role)) -}}
{{- end -}}
{{- if and $relay.secretKeys (not $relay.existingSecret) -}}
{{- fail "relay.existingSecret: relay.secretKeys names keys of a Secret; set its name" -}}
{{- end -}}
{{- if ne (int (len (without ($relay.secretKeys | default list) "nats.creds" "ca.crt"))) 0 -}}
{{- if not (and (has "tls.crt" $relay.secretKeys) (has "tls.key" $relay.secretKeys)) -}}
{{- fail "relay.secretKeys: tls.crt and tls.key go together (a client certificate and its key)" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $relay.role "consume") (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) -}}
{{- fail "relay.role: consume runs exactly one replica (stream order); set replicaCount: 1 and autoscaling.enabled: false" -}}
{{- end -}}
{{- range $i, $mapping := ($config.mappings | default list) -}}
{{- if not (or $mapping.aliases $mapping.gitRepos $mapping.selector $mapping.exclude) -}}
{{- fail (printf "config.mappings[%d]: mapping does nothing: give aliases, gitRepos, selector or exclude" $i) -}}
{{- end -}}
{{- end -}}
{{- $polling := $config.polling | default dict -}}
{{- if and (hasKey $polling "webhookInterval") (regexMatch "^(0|(0+(\\.0+)?(ns|us|µs|ms|s|m|h))+)$" (toString $polling.webhookInterval)) -}}
{{- fail "config.polling.webhookInterval: must be longer than 0 (use config.polling.manage: false instead)" -}}
{{- end -}}
{{- end -}}

{{/* "true" when extraEnv sets the relay URL variable of the chosen role itself (e.g. from a Secret). */}}
{{- define "fleet-webhook.relayUrlInExtraEnv" -}}
{{- $want := printf "FLEET_WEBHOOK_RELAY_%s" (upper .Values.relay.role) -}}
{{- range .Values.extraEnv -}}
{{- if eq .name $want -}}true{{- end -}}
{{- end -}}
{{- end -}}
