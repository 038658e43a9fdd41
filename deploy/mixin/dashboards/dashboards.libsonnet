{
  grafanaDashboards+:: {
    'mailbox-overview.json': (import 'mailbox-overview.libsonnet')($._config),
    'mailbox-target.json': (import 'mailbox-target.libsonnet')($._config),
  },
}
