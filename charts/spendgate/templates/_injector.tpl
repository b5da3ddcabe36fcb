{{- /* Names and lists shared by the injector's templates (docs/injection.md). */ -}}
{{- define "spendgate.injector.configuration" -}}
{{ .Release.Name }}-spendgate-injector
{{- end -}}

{{- /* Namespaces whose pods may get a sidecar: the bundle namespaces, less the release's. */ -}}
{{- define "spendgate.injector.namespaces" -}}
{{- without (.Values.operator.bundleNamespaces | uniq) .Release.Namespace | toJson -}}
{{- end -}}

{{- define "spendgate.injector.excluded" -}}
{{- concat (list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace) .Values.injector.excludeNamespaces | uniq | toJson -}}
{{- end -}}

{{- /* What the injector injects: rendered once, checked by the injector at start (SidecarSettings). */ -}}
{{- define "spendgate.injector.settings" -}}
{{- $sidecar := .Values.injector.sidecar -}}
{{- dict
    "image" (include "spendgate.image" .)
    "imagePullPolicy" .Values.image.pullPolicy
    "mode" $sidecar.mode
    "bundleSource" $sidecar.bundleSource
    "port" $sidecar.port
    "adminPort" $sidecar.adminPort
    "upstream" .Values.gateway.upstream
    "upstreamKeySecret" $sidecar.upstreamKeySecret
    "reportNamespace" .Release.Namespace
    "resources" $sidecar.resources
  | toPrettyJson -}}
{{- end -}}
