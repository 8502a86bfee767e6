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
