// The shipped files, by path from the repository's root: deploy/mixin/generate writes them.
// `config` (jsonnet code) is merged into the mixin's _config, e.g. --tla-code config='{sloObjective: 0.999}'.
function(config={})
  local mixin = (import 'mixin.libsonnet') + { _config+:: config };
  local yaml = import 'lib/yaml.libsonnet';
  local groups = mixin.prometheusAlerts.groups + mixin.prometheusRules.groups;
  local header = yaml.comment(importstr 'header.txt');
  local kubernetes = |||
    # Generated from deploy/prometheus/rules/mailbox.rules.yml: its groups, as they are. Do not
    # edit; regenerate (docs/deployment.md). tests/test_deploy_kubernetes.py checks that the two agree.
    # A Prometheus installed by kube-prometheus-stack selects rules by its release label: add
    # `release: <your release>` to the labels if yours does.
    apiVersion: monitoring.coreos.com/v1
    kind: PrometheusRule
    metadata:
      name: mailbox-exporter
      namespace: mailbox-exporter
      labels:
        app.kubernetes.io/name: mailbox-exporter
    spec:
  |||;
  {
    rules: {
      'deploy/prometheus/rules/mailbox.rules.yml':
        std.join('\n', header + yaml.groups('', groups)),
      'deploy/kubernetes/prometheusrule.yaml':
        kubernetes + std.join('\n', yaml.groups('  ', groups)),
    },
    dashboards: {
      ['deploy/grafana/dashboards/' + name]: mixin.grafanaDashboards[name]
      for name in std.objectFields(mixin.grafanaDashboards)
    },
  }
