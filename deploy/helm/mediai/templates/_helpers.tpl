{{/* The chart's names and labels, and what every MediAI pod shares. */}}

{{- define "mediai.name" -}}
{{- printf "%s" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "mediai.labels" -}}
app.kubernetes.io/part-of: mediai
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mediai.image" -}}
{{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end -}}

{{/* Settings and platform secrets, for every MediAI container. */}}
{{- define "mediai.envFrom" -}}
- configMapRef: {name: {{ include "mediai.name" . }}-settings}
- secretRef: {name: {{ .Values.secrets.platform }}}
{{- end -}}

{{/* A MediAI container's security: no privileges, a read-only root, /tmp in memory. */}}
{{- define "mediai.containerSecurity" -}}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
{{- end -}}

{{/* The root filesystem is read-only: the data folder (MEDIAI_DATA_DIR, the image's working
directory) and /tmp are the only writable places. */}}
{{- define "mediai.volumeMounts" -}}
- {name: data, mountPath: /var/lib/mediai}
- {name: tmp, mountPath: /tmp}
{{- end -}}

{{- define "mediai.volumes" -}}
- {name: data, emptyDir: {sizeLimit: {{ .dataSize }}}}
- {name: tmp, emptyDir: {medium: Memory, sizeLimit: 64Mi}}
{{- end -}}

{{/* A component's own NATS user (docs/deployment.md, "Who may do what on the bus"): its name,
and its password from the NATS users Secret, under the same key as its name. */}}
{{- define "mediai.natsUser" -}}
- {name: NATS_USER, value: {{ .user }}}
- name: NATS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .root.Values.secrets.natsUsers }}, key: {{ .user }}}}
{{- end -}}
