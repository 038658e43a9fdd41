// mailbox-exporter's monitoring mixin: prometheusAlerts, prometheusRules and
// grafanaDashboards, set up by _config (config.libsonnet).
(import 'config.libsonnet')
+ (import 'alerts/alerts.libsonnet')
+ (import 'rules/rules.libsonnet')
+ (import 'dashboards/dashboards.libsonnet')
