{{/* Names and labels. */}}
{{- define "ipvsproxy.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ipvsproxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ipvsproxy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ipvsproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ipvsproxy.labels" -}}
{{ include "ipvsproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The port of a HOST:PORT address. */}}
{{- define "ipvsproxy.port" -}}
{{- splitList ":" . | last -}}
{{- end -}}

{{/*
The config file: KubeProxyConfiguration's field names, the same format as
packaging/config.yaml and `ipvsproxy --config`.
*/}}
{{- define "ipvsproxy.config" -}}
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
bindAddress: 0.0.0.0
healthzBindAddress: {{ .Values.healthzBindAddress | quote }}
metricsBindAddress: {{ .Values.metricsBindAddress | quote }}
bindAddressHardFail: {{ .Values.bindAddressHardFail }}
clusterCIDR: {{ .Values.clusterCIDR | quote }}
detectLocalMode: {{ .Values.detectLocalMode | quote }}
detectLocal:
  bridgeInterface: {{ .Values.detectLocal.bridgeInterface | quote }}
  interfaceNamePrefix: {{ .Values.detectLocal.interfaceNamePrefix | quote }}
nodePortAddresses: {{ .Values.nodePortAddresses | toJson }}
conntrack:
  maxPerCore: {{ .Values.conntrack.maxPerCore | int }}
  min: {{ .Values.conntrack.min | int }}
  tcpEstablishedTimeout: {{ .Values.conntrack.tcpEstablishedTimeout | quote }}
  tcpCloseWaitTimeout: {{ .Values.conntrack.tcpCloseWaitTimeout | quote }}
  tcpBeLiberal: {{ .Values.conntrack.tcpBeLiberal }}
  udpTimeout: {{ .Values.conntrack.udpTimeout | quote }}
  udpStreamTimeout: {{ .Values.conntrack.udpStreamTimeout | quote }}
iptables:
  masqueradeAll: {{ .Values.masqueradeAll }}
ipvs:
  scheduler: {{ .Values.scheduler | quote }}
  syncPeriod: {{ .Values.syncPeriod | quote }}
  minSyncPeriod: {{ .Values.minSyncPeriod | quote }}
  strictARP: {{ .Values.strictARP }}
  tcpTimeout: {{ .Values.tcpTimeout | quote }}
  tcpFinTimeout: {{ .Values.tcpFinTimeout | quote }}
  udpTimeout: {{ .Values.udpTimeout | quote }}
  excludeCIDRs: {{ .Values.excludeCIDRs | toJson }}
logging:
  format: {{ if eq .Values.logFormat "console" }}text{{ else }}json{{ end }}
  verbosity: {{ .Values.verbosity }}
{{- end -}}

{{/*
Seconds in a Prometheus or Go duration (1y 1w 1d 1h 1m 1s 1ms, combined: 1h30m, 1.5s),
as a float. The schema checks the forms before this runs.
*/}}
{{- define "ipvsproxy.seconds" -}}
{{- $units := dict "y" 31536000.0 "w" 604800.0 "d" 86400.0 "h" 3600.0 "m" 60.0 "s" 1.0 "ms" 0.001 "us" 0.000001 "µs" 0.000001 "ns" 0.000000001 -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9.]+(ms|us|µs|ns|y|w|d|h|m|s)" (toString .) -1 -}}
{{- $number := regexFind "^[0-9.]+" . -}}
{{- $total = addf $total (mulf (float64 $number) (get $units (trimPrefix $number .))) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/* Bytes in a Kubernetes quantity (268435456, 256Mi, 1Gi, 512M, 1.5G), as an integer. */}}
{{- define "ipvsproxy.bytes" -}}
{{- $q := toString . -}}
{{- if not (regexMatch "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$" $q) -}}
{{- fail (printf "cannot read %q as bytes: set prometheusRule.memoryGrowth.limitBytes" $q) -}}
{{- end -}}
{{- $units := dict "" 1.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 -}}
{{- $number := regexFind "^[0-9.]+" $q -}}
{{- mulf (float64 $number) (get $units (trimPrefix $number $q)) | ceil | int64 -}}
{{- end -}}

{{/* A number as PromQL reads it best: 300, not 3e+02; 0.25 stays 0.25. */}}
{{- define "ipvsproxy.number" -}}
{{- $f := float64 . -}}
{{- if eq $f (floor $f) -}}{{ int64 $f }}{{- else -}}{{ $f }}{{- end -}}
{{- end -}}
