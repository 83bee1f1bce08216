{{/*
Helpers of the icn-super-node chart. Every define is prefixed with the chart name.

Object names never depend on the release name: every object of a region is
icn-super-node-<region>[-suffix], so one release per region can share a namespace
and a release rename does not rename (or orphan) anything.
*/}}

{{/* Chart name, "icn-super-node". */}}
{{- define "icn-super-node.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* chart label value: name-version (the version never goes on pod templates). */}}
{{- define "icn-super-node.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Name of a region's objects: icn-super-node-<region>[-<suffix>].
Call with (dict "root" $ "region" $region ["suffix" "headless"]).
*/}}
{{- define "icn-super-node.regionName" -}}
{{- $name := printf "%s-%s" (include "icn-super-node.name" .root) .region -}}
{{- if .suffix -}}
{{- $name = printf "%s-%s" $name .suffix -}}
{{- end -}}
{{- $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The region catalogue, as a JSON list of {name, neighbours}: the values' `regions` when given (a
fleet of other regions), else the chart's regions.yaml (the seven production regions).
*/}}
{{- define "icn-super-node.catalogue" -}}
{{- $given := .Values.regions | default list -}}
{{- if $given -}}
{{- $given | toJson -}}
{{- else -}}
{{- (.Files.Get "regions.yaml" | fromYaml).regions | toJson -}}
{{- end -}}
{{- end -}}

{{/* Every region of the catalogue, in order, as a JSON list. "all" expands to this list. */}}
{{- define "icn-super-node.allRegions" -}}
{{- $out := list -}}
{{- range (include "icn-super-node.catalogue" . | fromJsonArray) -}}
{{- $out = append $out (toString .name) -}}
{{- end -}}
{{- $out | toJson -}}
{{- end -}}

{{/*
Nearest-first neighbours of a region, as a JSON list: routing.neighbours.<region> when the values
set it, else the region's catalogue entry. Call with (dict "root" $ "region" $r).
*/}}
{{- define "icn-super-node.neighbours" -}}
{{- $out := get .root.Values.routing.neighbours .region -}}
{{- if not $out -}}
{{- range (include "icn-super-node.catalogue" .root | fromJsonArray) -}}
{{- if eq (toString .name) $.region -}}
{{- $out = .neighbours -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $out | default list | toJson -}}
{{- end -}}

{{/*
Expand a regions value (a list, or the string "all") to a JSON list.
Call with (dict "root" $ "value" <value>).
*/}}
{{- define "icn-super-node.expandRegions" -}}
{{- $v := .value -}}
{{- if and (kindIs "string" $v) (eq $v "all") -}}
{{- include "icn-super-node.allRegions" .root -}}
{{- else if kindIs "slice" $v -}}
{{- $out := list -}}
{{- range $v -}}
{{- $out = append $out (toString .) -}}
{{- end -}}
{{- $out | toJson -}}
{{- else -}}
{{- list | toJson -}}
{{- end -}}
{{- end -}}

{{/*
Regions this release renders, as a JSON list (use with fromJsonArray).
Validates all values first, so every template fails with the same complete message.
*/}}
{{- define "icn-super-node.regions" -}}
{{- include "icn-super-node.validateValues" . -}}
{{- include "icn-super-node.expandRegions" (dict "root" . "value" .Values.global.regions) -}}
{{- end -}}

{{/* Regions the mesh VirtualService routes to (istio.meshRouting.regions, [] = global.regions), JSON list. */}}
{{- define "icn-super-node.meshRegions" -}}
{{- $v := .Values.istio.meshRouting.regions -}}
{{- if or (and (kindIs "slice" $v) (gt (len $v) 0)) (kindIs "string" $v) -}}
{{- include "icn-super-node.expandRegions" (dict "root" . "value" $v) -}}
{{- else -}}
{{- include "icn-super-node.regions" . -}}
{{- end -}}
{{- end -}}

{{/*
Nearest neighbour of a region among candidate regions (its neighbours' order), or "" if none.
Call with (dict "root" $ "region" $r "candidates" (list ...)).
*/}}
{{- define "icn-super-node.nearestNeighbour" -}}
{{- $found := "" -}}
{{- range (include "icn-super-node.neighbours" (dict "root" .root "region" .region) | fromJsonArray) -}}
{{- if and (not $found) (has . $.candidates) (ne . $.region) -}}
{{- $found = . -}}
{{- end -}}
{{- end -}}
{{- $found -}}
{{- end -}}

{{/* Selector labels of a region: name + region only (selectors are immutable; no release name). */}}
{{- define "icn-super-node.selectorLabels" -}}
app.kubernetes.io/name: {{ include "icn-super-node.name" .root }}
icn.network/region: {{ .region }}
{{- end -}}

{{/* Pod template labels: selector + instance + component. No chart version, so a chart bump does not restart pods. */}}
{{- define "icn-super-node.podLabels" -}}
{{ include "icn-super-node.selectorLabels" . }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: super-node
app.kubernetes.io/part-of: icn
{{- end -}}

{{/* Labels of every rendered object. Call with (dict "root" $ ["region" $region]). */}}
{{- define "icn-super-node.labels" -}}
helm.sh/chart: {{ include "icn-super-node.chart" .root }}
app.kubernetes.io/name: {{ include "icn-super-node.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/component: super-node
app.kubernetes.io/part-of: icn
{{- if .region }}
icn.network/region: {{ .region }}
{{- end }}
{{- end -}}

{{/* Container image reference: registry/repository@digest or registry/repository:tag. */}}
{{- define "icn-super-node.image" -}}
{{- $img := .Values.image -}}
{{- $repo := $img.repository -}}
{{- if $img.registry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" $img.registry) $img.repository -}}
{{- end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (toString $img.tag) -}}
{{- end -}}
{{- end -}}

{{/*
Data of a region's bootstrap ConfigMap. Used by the ConfigMap and by the pod template's
checksum annotation, so a changed bootstrap list rolls the pods.
Call with (dict "root" $ "region" $region).
*/}}
{{- define "icn-super-node.bootstrapData" -}}
BOOTSTRAP_NODES: {{ join "," .root.Values.p2p.bootstrapNodes | quote }}
bootstrap-nodes.txt: |
  {{- range .root.Values.p2p.bootstrapNodes }}
  {{ . }}
  {{- end }}
{{- end -}}

{{/*
"true" if an optional feature is rendered: its mode is true, or auto and the cluster serves the
API its objects need. Call with (dict "root" $ "mode" <auto|true|false> "api" "<group/version/Kind>").
*/}}
{{- define "icn-super-node.enabledWhenServed" -}}
{{- $mode := toString .mode -}}
{{- if or (eq $mode "true") (and (eq $mode "auto") (.root.Capabilities.APIVersions.Has .api)) -}}
true
{{- end -}}
{{- end -}}

{{/* "true" if the ServiceMonitor is rendered (metrics.serviceMonitor.enabled: auto|true|false). */}}
{{- define "icn-super-node.serviceMonitorEnabled" -}}
{{- include "icn-super-node.enabledWhenServed" (dict "root" . "mode" .Values.metrics.serviceMonitor.enabled "api" "monitoring.coreos.com/v1/ServiceMonitor") -}}
{{- end -}}

{{/* "true" if the PrometheusRule is rendered (metrics.prometheusRule.enabled: auto|true|false). */}}
{{- define "icn-super-node.prometheusRuleEnabled" -}}
{{- include "icn-super-node.enabledWhenServed" (dict "root" . "mode" .Values.metrics.prometheusRule.enabled "api" "monitoring.coreos.com/v1/PrometheusRule") -}}
{{- end -}}

{{/* "true" if Istio objects are rendered (istio.enabled: auto|true|false). */}}
{{- define "icn-super-node.istioEnabled" -}}
{{- include "icn-super-node.enabledWhenServed" (dict "root" . "mode" .Values.istio.enabled "api" "networking.istio.io/v1/VirtualService") -}}
{{- end -}}

{{/*
The chart's own checks: what values.schema.json cannot express (cross-field rules, duplicates),
plus the region checks again so they hold with --skip-schema-validation too.
Gathers every problem and fails ONCE, each message naming the field and what is allowed.
*/}}
{{- define "icn-super-node.validateValues" -}}
{{- $v := .Values -}}
{{- $all := include "icn-super-node.allRegions" . | fromJsonArray -}}
{{- $allowed := printf "allowed: a list of %s (each at most once) or the string \"all\"" (join ", " $all) -}}
{{- $msgs := list -}}

{{- /* global.regions: list or "all", known regions, no duplicates, not empty */ -}}
{{- range $field, $value := dict "global.regions" $v.global.regions "istio.meshRouting.regions" $v.istio.meshRouting.regions -}}
{{- if kindIs "slice" $value -}}
{{- $seen := list -}}
{{- $dups := list -}}
{{- range $value -}}
{{- $r := toString . -}}
{{- if not (has $r $all) -}}
{{- $msgs = append $msgs (printf "%s: unknown region %q; %s" $field $r $allowed) -}}
{{- end -}}
{{- if and (has $r $seen) (not (has $r $dups)) -}}
{{- $dups = append $dups $r -}}
{{- end -}}
{{- $seen = append $seen $r -}}
{{- end -}}
{{- if $dups -}}
{{- $msgs = append $msgs (printf "%s: region(s) %s listed more than once; %s" $field (join ", " $dups) $allowed) -}}
{{- end -}}
{{- if and (eq $field "global.regions") (eq (len $value) 0) -}}
{{- $msgs = append $msgs (printf "%s: is empty; %s" $field $allowed) -}}
{{- end -}}
{{- else if not (and (kindIs "string" $value) (eq $value "all")) -}}
{{- $msgs = append $msgs (printf "%s: %v is neither a list of regions nor \"all\"; %s" $field $value $allowed) -}}
{{- end -}}
{{- end -}}

{{- /* autoscaling bounds */ -}}
{{- $as := $v.autoscaling -}}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) -}}
{{- $msgs = append $msgs (printf "autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d); allowed: 1 <= minReplicas <= maxReplicas" (int $as.minReplicas) (int $as.maxReplicas)) -}}
{{- end -}}

{{- /* PDB must leave room for one eviction */ -}}
{{- $pdb := $v.podDisruptionBudget -}}
{{- $pdbMin := $pdb.minAvailable -}}
{{- if and $pdb.enabled (or (kindIs "float64" $pdbMin) (kindIs "int64" $pdbMin) (kindIs "int" $pdbMin)) -}}
{{- $min := int $pdbMin -}}
{{- if ge $min (int $v.replicasPerRegion) -}}
{{- $msgs = append $msgs (printf "podDisruptionBudget.minAvailable (%d) must be lower than replicasPerRegion (%d), otherwise no pod of a region can ever be evicted and node drains hang; allowed: 0..%d" $min (int $v.replicasPerRegion) (sub (int $v.replicasPerRegion) 1)) -}}
{{- end -}}
{{- if and $as.enabled (ge $min (int $as.minReplicas)) -}}
{{- $msgs = append $msgs (printf "podDisruptionBudget.minAvailable (%d) must be lower than autoscaling.minReplicas (%d), otherwise a region at its minimum can never lose a pod to a drain; allowed: 0..%d" $min (int $as.minReplicas) (sub (int $as.minReplicas) 1)) -}}
{{- end -}}
{{- end -}}

{{- /* the catalogue: named regions, each once; every region's neighbours (catalogue or routing.neighbours) a non-empty list of the other regions */ -}}
{{- $names := list -}}
{{- range $i, $entry := (include "icn-super-node.catalogue" . | fromJsonArray) -}}
{{- $name := "" -}}
{{- if kindIs "map" $entry -}}
{{- $name = toString (get $entry "name") -}}
{{- end -}}
{{- if not (regexMatch "^[a-z][a-z0-9-]{0,30}[a-z0-9]$" $name) -}}
{{- $msgs = append $msgs (printf "regions[%d].name: %q is not a region name; allowed: lowercase letters, digits and '-', 2 to 32 characters" $i $name) -}}
{{- else if has $name $names -}}
{{- $msgs = append $msgs (printf "regions[%d].name: %s is listed twice; allowed: each region once" $i $name) -}}
{{- end -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- range $r := (keys $v.routing.neighbours | sortAlpha) -}}
{{- if not (has $r $all) -}}
{{- $msgs = append $msgs (printf "routing.neighbours.%s: not a region of the catalogue; allowed: %s" $r (join ", " $all)) -}}
{{- end -}}
{{- end -}}
{{- range $r := $all -}}
{{- $n := include "icn-super-node.neighbours" (dict "root" $ "region" $r) | fromJsonArray -}}
{{- if not $n -}}
{{- $msgs = append $msgs (printf "neighbours of %s (its catalogue entry or routing.neighbours.%s): missing or empty; allowed: a nearest-first list of the other regions (%s)" $r $r (join ", " (without $all $r))) -}}
{{- else -}}
{{- if has $r $n -}}
{{- $msgs = append $msgs (printf "neighbours of %s (its catalogue entry or routing.neighbours.%s): lists the region itself; allowed: the other regions (%s)" $r $r (join ", " (without $all $r))) -}}
{{- end -}}
{{- range $n -}}
{{- if not (has (toString .) $all) -}}
{{- $msgs = append $msgs (printf "neighbours of %s (its catalogue entry or routing.neighbours.%s): unknown region %q; allowed: %s" $r $r (toString .) (join ", " (without $all $r))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* the staking keys Secret is required (schema has minLength 1; this covers --skip-schema-validation) */ -}}
{{- if not $v.secrets.stakingKeys.existingSecret -}}
{{- $msgs = append $msgs "secrets.stakingKeys.existingSecret: is empty; allowed: the name of an existing Secret with keys <region>-staking-key (e.g. icn-staking-keys)" -}}
{{- end -}}

{{- if $msgs -}}
{{- fail (printf "\n\nicn-super-node: invalid values (%d problem(s)):\n  - %s\n" (len $msgs) (join "\n  - " $msgs)) -}}
{{- end -}}
{{- end -}}
