// The mailbox-overview dashboard.
function(config) {
  // A row per location, below the row "Locations" (which ends at y 94).
  local locationRows = (import 'location-rows.libsonnet')(config, 94),
  __requires: [
    {
      type: 'grafana',
      id: 'grafana',
      name: 'Grafana',
      version: '10.4.0',
    },
    {
      type: 'datasource',
      id: 'prometheus',
      name: 'Prometheus',
      version: '1.0.0',
    },
  ],
  annotations: {
    list: [
      {
        builtIn: 1,
        datasource: {
          type: 'grafana',
          uid: '-- Grafana --',
        },
        enable: true,
        hide: true,
        iconColor: 'rgba(0, 211, 255, 1)',
        name: 'Annotations & Alerts',
        type: 'dashboard',
      },
      {
        datasource: {
          type: 'prometheus',
          uid: '${datasource}',
        },
        enable: true,
        hide: false,
        iconColor: 'orange',
        name: 'Provider incidents',
        expr: 'max by (provider, service, incident, classification, status) (mailbox_provider_incident_info{job=~"$job", instance=~"$instance"})',
        step: '1m',
        titleFormat: '{{provider}} {{incident}}',
        textFormat: "{{service}}: {{classification}}, {{status}}: open on the provider's status page (provider_status)",
        tagKeys: 'provider,service,classification,status',
        useValueForTime: false,
      },
    ],
  },
  description: 'Every mailbox target at a glance: availability, error budget, delivery time, failures, logins, certificates and the exporters themselves.',
  editable: false,
  fiscalYearStartMonth: 0,
  graphTooltip: 1,
  id: null,
  links: [
    {
      type: 'link',
      title: 'Target drill-down',
      tooltip: 'Phase timings, delivery-time heatmap and failures of one target',
      url: '/d/mailbox-target/mailbox-exporter-target',
      icon: 'dashboard',
      includeVars: true,
      keepTime: true,
      asDropdown: false,
      targetBlank: false,
      tags: [],
    },
  ],
  liveNow: false,
  panels: [
    {
      type: 'row',
      id: 1,
      title: 'Status now',
      collapsed: false,
      gridPos: {
        h: 1,
        w: 24,
        x: 0,
        y: 0,
      },
      panels: [],
    },
    {
      type: 'stat',
      id: 2,
      title: 'Failing checks',
      description: 'Checks (target and check) whose last probe failed: the sum of 1 - mailbox_probe_success.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 4,
        w: 4,
        x: 0,
        y: 1,
      },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
              {
                color: 'red',
                value: 1,
              },
            ],
          },
          color: {
            mode: 'thresholds',
          },
        },
        overrides: [],
      },
      options: {
        reduceOptions: {
          calcs: [
            'lastNotNull',
          ],
          fields: '',
          values: false,
        },
        orientation: 'auto',
        textMode: 'value',
        colorMode: 'background',
        graphMode: 'none',
        justifyMode: 'auto',
        wideLayout: true,
        showPercentChange: false,
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'sum(1 - mailbox_probe_success{job=~"$job", instance=~"$instance", target=~"$target"})',
          legendFormat: 'failing',
          range: false,
          instant: true,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'stat',
      id: 3,
      title: 'Stale checks',
      description: 'Checks with no finished probe for four intervals, the condition of the MailboxProbesStale alert: their other panels show old results.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 4,
        w: 4,
        x: 0,
        y: 5,
      },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
              {
                color: 'orange',
                value: 1,
              },
            ],
          },
          color: {
            mode: 'thresholds',
          },
        },
        overrides: [],
      },
      options: {
        reduceOptions: {
          calcs: [
            'lastNotNull',
          ],
          fields: '',
          values: false,
        },
        orientation: 'auto',
        textMode: 'value',
        colorMode: 'background',
        graphMode: 'none',
        justifyMode: 'auto',
        wideLayout: true,
        showPercentChange: false,
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'sum((time() - mailbox_probe_last_timestamp_seconds{job=~"$job", instance=~"$instance", target=~"$target"}) > bool (4 * mailbox_probe_interval_seconds{job=~"$job", instance=~"$instance", target=~"$target"}))',
          legendFormat: 'stale',
          range: false,
          instant: true,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'table',
      id: 4,
      title: 'Status by target and check',
      description: 'The last probe of every target and check: outcome, failures in a row, duration and how long ago it finished. Click a target to open its drill-down dashboard.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 14,
        x: 4,
        y: 1,
      },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
            ],
          },
          color: {
            mode: 'thresholds',
          },
        },
        overrides: [
          {
            matcher: {
              id: 'byName',
              options: 'target',
            },
            properties: [
              {
                id: 'links',
                value: [
                  {
                    title: 'Open ${__data.fields.target} in the target dashboard',
                    url: '/d/mailbox-target/mailbox-exporter-target?${datasource:queryparam}&${job:queryparam}&${instance:queryparam}&var-target=${__data.fields.target}&${__url_time_range}',
                  },
                ],
              },
            ],
          },
          {
            matcher: {
              id: 'byName',
              options: 'Last probe',
            },
            properties: [
              {
                id: 'mappings',
                value: [
                  {
                    type: 'value',
                    options: {
                      '0': {
                        text: 'FAIL',
                        color: 'red',
                        index: 0,
                      },
                      '1': {
                        text: 'OK',
                        color: 'green',
                        index: 1,
                      },
                    },
                  },
                ],
              },
              {
                id: 'custom.cellOptions',
                value: {
                  type: 'color-background',
                },
              },
              {
                id: 'thresholds',
                value: {
                  mode: 'absolute',
                  steps: [
                    {
                      color: 'red',
                      value: null,
                    },
                    {
                      color: 'green',
                      value: 1,
                    },
                  ],
                },
              },
            ],
          },
          {
            matcher: {
              id: 'byName',
              options: 'Failures in a row',
            },
            properties: [
              {
                id: 'custom.cellOptions',
                value: {
                  type: 'color-text',
                },
              },
              {
                id: 'thresholds',
                value: {
                  mode: 'absolute',
                  steps: [
                    {
                      color: 'green',
                      value: null,
                    },
                    {
                      color: 'orange',
                      value: 1,
                    },
                    {
                      color: 'red',
                      value: 2,
                    },
                  ],
                },
              },
            ],
          },
          {
            matcher: {
              id: 'byName',
              options: 'Duration',
            },
            properties: [
              {
                id: 'unit',
                value: 's',
              },
            ],
          },
          {
            matcher: {
              id: 'byName',
              options: 'Finished ago',
            },
            properties: [
              {
                id: 'unit',
                value: 's',
              },
            ],
          },
        ],
      },
      options: {
        showHeader: true,
        cellHeight: 'sm',
        footer: {
          show: false,
          reducer: [
            'sum',
          ],
          countRows: false,
          fields: '',
        },
        sortBy: [],
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox_probe_success{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '__auto',
          range: false,
          instant: true,
          format: 'table',
          refId: 'A',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox_probe_consecutive_failures{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '__auto',
          range: false,
          instant: true,
          format: 'table',
          refId: 'B',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox_probe_duration_seconds{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '__auto',
          range: false,
          instant: true,
          format: 'table',
          refId: 'C',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'time() - mailbox_probe_last_timestamp_seconds{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '__auto',
          range: false,
          instant: true,
          format: 'table',
          refId: 'D',
        },
      ],
      transformations: [
        {
          id: 'merge',
          options: {},
        },
        {
          id: 'organize',
          options: {
            excludeByName: {
              Time: true,
              __name__: true,
            },
            renameByName: {
              'Value #A': 'Last probe',
              'Value #B': 'Failures in a row',
              'Value #C': 'Duration',
              'Value #D': 'Finished ago',
            },
            indexByName: {
              target: 0,
              check: 1,
              'Value #A': 2,
              'Value #B': 3,
              'Value #C': 4,
              'Value #D': 5,
              instance: 6,
              job: 7,
            },
          },
        },
      ],
    },
    {
      type: 'stat',
      id: 5,
      title: 'Error budget left (30 days)',
      description: 'Share of the 30-day round-trip error budget left per target (recording rule mailbox:roundtrip_error_budget:remaining30d): 100% untouched, 0% spent, below 0 overspent.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 6,
        x: 18,
        y: 1,
      },
      fieldConfig: {
        defaults: {
          unit: 'percentunit',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'red',
                value: null,
              },
              {
                color: 'orange',
                value: 0,
              },
              {
                color: 'green',
                value: 0.25,
              },
            ],
          },
          color: {
            mode: 'thresholds',
          },
          decimals: 1,
        },
        overrides: [],
      },
      options: {
        reduceOptions: {
          calcs: [
            'lastNotNull',
          ],
          fields: '',
          values: false,
        },
        orientation: 'auto',
        textMode: 'value_and_name',
        colorMode: 'background',
        graphMode: 'none',
        justifyMode: 'auto',
        wideLayout: true,
        showPercentChange: false,
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox:roundtrip_error_budget:remaining30d{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{target}}',
          range: false,
          instant: true,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'row',
      id: 6,
      title: 'Availability',
      collapsed: false,
      gridPos: {
        h: 1,
        w: 24,
        x: 0,
        y: 9,
      },
      panels: [],
    },
    {
      type: 'state-timeline',
      id: 7,
      title: 'Probe success over time',
      description: 'mailbox_probe_success of every target and check: green while the last probe succeeded, red while it failed.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 12,
        x: 0,
        y: 10,
      },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'red',
                value: null,
              },
              {
                color: 'green',
                value: 1,
              },
            ],
          },
          color: {
            mode: 'thresholds',
          },
          custom: {
            fillOpacity: 80,
            lineWidth: 0,
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
          mappings: [
            {
              type: 'value',
              options: {
                '0': {
                  text: 'FAIL',
                  color: 'red',
                  index: 0,
                },
                '1': {
                  text: 'OK',
                  color: 'green',
                  index: 1,
                },
              },
            },
          ],
        },
        overrides: [],
      },
      options: {
        mergeValues: true,
        showValue: 'never',
        alignValue: 'left',
        rowHeight: 0.8,
        legend: {
          displayMode: 'list',
          placement: 'bottom',
          showLegend: false,
        },
        tooltip: {
          mode: 'single',
          sort: 'none',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox_probe_success{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{target}} / {{check}}',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'timeseries',
      id: 8,
      title: 'Probe success ratio',
      description: 'Share of probes that succeeded per target and check, from the probe and failure counters, so no probe is missed between scrapes.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 12,
        x: 12,
        y: 10,
      },
      fieldConfig: {
        defaults: {
          unit: 'percentunit',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
            ],
          },
          color: {
            mode: 'palette-classic',
          },
          custom: {
            drawStyle: 'line',
            lineWidth: 1,
            fillOpacity: 10,
            gradientMode: 'none',
            showPoints: 'never',
            pointSize: 4,
            spanNulls: false,
            lineInterpolation: 'linear',
            stacking: {
              mode: 'none',
              group: 'A',
            },
            axisPlacement: 'auto',
            axisSoftMin: 0,
            barAlignment: 0,
            scaleDistribution: {
              type: 'linear',
            },
            thresholdsStyle: {
              mode: 'off',
            },
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
          min: 0,
          max: 1,
        },
        overrides: [],
      },
      options: {
        legend: {
          displayMode: 'table',
          placement: 'bottom',
          showLegend: true,
          calcs: [
            'lastNotNull',
            'max',
          ],
        },
        tooltip: {
          mode: 'multi',
          sort: 'desc',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: '1 - sum by (job, instance, target, check) (increase(mailbox_probes_failed_total{job=~"$job", instance=~"$instance", target=~"$target"}[$__rate_interval]))\n/ sum by (job, instance, target, check) (increase(mailbox_probes_total{job=~"$job", instance=~"$instance", target=~"$target"}[$__rate_interval]))',
          legendFormat: '{{target}} / {{check}}',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'timeseries',
      id: 9,
      title: 'Round-trip error ratio (burn-rate windows)',
      description: 'Share of failed round trips over 5 minutes, 1 hour and 6 hours (recording rules mailbox:roundtrip_error_ratio:*), the windows the error-budget burn alerts compare.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 12,
        x: 0,
        y: 18,
      },
      fieldConfig: {
        defaults: {
          unit: 'percentunit',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
            ],
          },
          color: {
            mode: 'palette-classic',
          },
          custom: {
            drawStyle: 'line',
            lineWidth: 1,
            fillOpacity: 10,
            gradientMode: 'none',
            showPoints: 'never',
            pointSize: 4,
            spanNulls: false,
            lineInterpolation: 'linear',
            stacking: {
              mode: 'none',
              group: 'A',
            },
            axisPlacement: 'auto',
            axisSoftMin: 0,
            barAlignment: 0,
            scaleDistribution: {
              type: 'linear',
            },
            thresholdsStyle: {
              mode: 'off',
            },
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
          min: 0,
        },
        overrides: [],
      },
      options: {
        legend: {
          displayMode: 'table',
          placement: 'bottom',
          showLegend: true,
          calcs: [
            'lastNotNull',
            'max',
          ],
        },
        tooltip: {
          mode: 'multi',
          sort: 'desc',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox:roundtrip_error_ratio:rate5m{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{target}} 5m',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox:roundtrip_error_ratio:rate1h{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{target}} 1h',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'B',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox:roundtrip_error_ratio:rate6h{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{target}} 6h',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'C',
        },
      ],
    },
    {
      type: 'stat',
      id: 10,
      title: 'Round-trip availability (30 days)',
      description: 'Share of successful round trips over 30 days per target (recording rule mailbox:roundtrip_availability:ratio_rate30d) next to the objective (mailbox:roundtrip_availability:objective).',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 12,
        x: 12,
        y: 18,
      },
      fieldConfig: {
        defaults: {
          unit: 'percentunit',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'red',
                value: null,
              },
              {
                color: 'green',
                value: 0.99,
              },
            ],
          },
          color: {
            mode: 'thresholds',
          },
          decimals: 3,
        },
        overrides: [
          {
            matcher: {
              id: 'byName',
              options: 'objective',
            },
            properties: [
              {
                id: 'color',
                value: {
                  mode: 'fixed',
                  fixedColor: 'blue',
                },
              },
            ],
          },
        ],
      },
      options: {
        reduceOptions: {
          calcs: [
            'lastNotNull',
          ],
          fields: '',
          values: false,
        },
        orientation: 'auto',
        textMode: 'value_and_name',
        colorMode: 'background',
        graphMode: 'none',
        justifyMode: 'auto',
        wideLayout: true,
        showPercentChange: false,
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox:roundtrip_availability:ratio_rate30d{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{target}}',
          range: false,
          instant: true,
          format: 'time_series',
          refId: 'A',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox:roundtrip_availability:objective',
          legendFormat: 'objective',
          range: false,
          instant: true,
          format: 'time_series',
          refId: 'B',
        },
      ],
    },
    {
      type: 'row',
      id: 11,
      title: 'Delivery time',
      collapsed: false,
      gridPos: {
        h: 1,
        w: 24,
        x: 0,
        y: 26,
      },
      panels: [],
    },
    {
      type: 'timeseries',
      id: 12,
      title: 'Delivery time quantiles',
      description: '50th, 90th and 99th percentile of the time from the SMTP server accepting a probe message to its arrival in the mailbox, from the histogram over the rate interval. Gaps: no round trip finished in that interval.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 12,
        x: 0,
        y: 27,
      },
      fieldConfig: {
        defaults: {
          unit: 's',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
            ],
          },
          color: {
            mode: 'palette-classic',
          },
          custom: {
            drawStyle: 'line',
            lineWidth: 1,
            fillOpacity: 10,
            gradientMode: 'none',
            showPoints: 'always',
            pointSize: 4,
            spanNulls: false,
            lineInterpolation: 'linear',
            stacking: {
              mode: 'none',
              group: 'A',
            },
            axisPlacement: 'auto',
            axisSoftMin: 0,
            barAlignment: 0,
            scaleDistribution: {
              type: 'linear',
            },
            thresholdsStyle: {
              mode: 'off',
            },
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
        },
        overrides: [],
      },
      options: {
        legend: {
          displayMode: 'table',
          placement: 'bottom',
          showLegend: true,
          calcs: [
            'lastNotNull',
            'max',
          ],
        },
        tooltip: {
          mode: 'multi',
          sort: 'desc',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'histogram_quantile(0.5, sum by (job, instance, target, le) (rate(mailbox_roundtrip_delivery_seconds_bucket{job=~"$job", instance=~"$instance", target=~"$target"}[$__rate_interval])))',
          legendFormat: '{{target}} p50',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'histogram_quantile(0.9, sum by (job, instance, target, le) (rate(mailbox_roundtrip_delivery_seconds_bucket{job=~"$job", instance=~"$instance", target=~"$target"}[$__rate_interval])))',
          legendFormat: '{{target}} p90',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'B',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'histogram_quantile(0.99, sum by (job, instance, target, le) (rate(mailbox_roundtrip_delivery_seconds_bucket{job=~"$job", instance=~"$instance", target=~"$target"}[$__rate_interval])))',
          legendFormat: '{{target}} p99',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'C',
        },
      ],
    },
    {
      type: 'timeseries',
      id: 13,
      title: 'Delivery time quantiles (30 minutes)',
      description: '50th, 90th and 99th percentile of delivery time over 30 minutes (recording rules mailbox:roundtrip_delivery_seconds:*_rate30m); MailboxDeliverySlow fires when p90 stays above 1 minute.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 12,
        x: 12,
        y: 27,
      },
      fieldConfig: {
        defaults: {
          unit: 's',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
              {
                color: 'orange',
                value: 60,
              },
            ],
          },
          color: {
            mode: 'palette-classic',
          },
          custom: {
            drawStyle: 'line',
            lineWidth: 1,
            fillOpacity: 10,
            gradientMode: 'none',
            showPoints: 'never',
            pointSize: 4,
            spanNulls: false,
            lineInterpolation: 'linear',
            stacking: {
              mode: 'none',
              group: 'A',
            },
            axisPlacement: 'auto',
            axisSoftMin: 0,
            barAlignment: 0,
            scaleDistribution: {
              type: 'linear',
            },
            thresholdsStyle: {
              mode: 'off',
            },
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
        },
        overrides: [],
      },
      options: {
        legend: {
          displayMode: 'table',
          placement: 'bottom',
          showLegend: true,
          calcs: [
            'lastNotNull',
            'max',
          ],
        },
        tooltip: {
          mode: 'multi',
          sort: 'desc',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox:roundtrip_delivery_seconds:p50_rate30m{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{target}} p50',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox:roundtrip_delivery_seconds:p90_rate30m{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{target}} p90',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'B',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox:roundtrip_delivery_seconds:p99_rate30m{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{target}} p99',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'C',
        },
      ],
    },
    {
      type: 'row',
      id: 14,
      title: 'Failures',
      collapsed: false,
      gridPos: {
        h: 1,
        w: 24,
        x: 0,
        y: 35,
      },
      panels: [],
    },
    {
      type: 'timeseries',
      id: 15,
      title: 'Failures by reason',
      description: 'Failed probes per target, check and reason in each interval (mailbox_probe_failures_total); reasons with no failures are left out. The series of a reason begins at its first failure, which the interval where it appears does not count.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 12,
        x: 0,
        y: 36,
      },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
            ],
          },
          color: {
            mode: 'palette-classic',
          },
          custom: {
            drawStyle: 'bars',
            lineWidth: 1,
            fillOpacity: 80,
            gradientMode: 'none',
            showPoints: 'never',
            pointSize: 4,
            spanNulls: false,
            lineInterpolation: 'linear',
            stacking: {
              mode: 'normal',
              group: 'A',
            },
            axisPlacement: 'auto',
            axisSoftMin: 0,
            barAlignment: 0,
            scaleDistribution: {
              type: 'linear',
            },
            thresholdsStyle: {
              mode: 'off',
            },
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
        },
        overrides: [
          {
            matcher: {
              id: 'byRegexp',
              options: '.*[:/] unavailable$',
            },
            properties: [
              {
                id: 'color',
                value: {
                  mode: 'fixed',
                  fixedColor: 'dark-red',
                },
              },
            ],
          },
          {
            matcher: {
              id: 'byRegexp',
              options: '.*[:/] junk$',
            },
            properties: [
              {
                id: 'color',
                value: {
                  mode: 'fixed',
                  fixedColor: 'purple',
                },
              },
            ],
          },
        ],
      },
      options: {
        legend: {
          displayMode: 'table',
          placement: 'bottom',
          showLegend: true,
          calcs: [
            'lastNotNull',
            'max',
          ],
        },
        tooltip: {
          mode: 'multi',
          sort: 'desc',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'sum by (job, instance, target, check, reason) (increase(mailbox_probe_failures_total{job=~"$job", instance=~"$instance", target=~"$target"}[$__rate_interval])) > 0',
          legendFormat: '{{target}} / {{check}}: {{reason}}',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'timeseries',
      id: 16,
      title: 'Failing checks by phase',
      description: 'Number of checks whose last probe failed, by the phase and reason it failed in (mailbox_probe_failed_info). The failure counter has no phase label: this is the state at each moment, not a count of failed probes.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 12,
        x: 12,
        y: 36,
      },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
            ],
          },
          color: {
            mode: 'palette-classic',
          },
          custom: {
            drawStyle: 'bars',
            lineWidth: 1,
            fillOpacity: 80,
            gradientMode: 'none',
            showPoints: 'never',
            pointSize: 4,
            spanNulls: false,
            lineInterpolation: 'linear',
            stacking: {
              mode: 'normal',
              group: 'A',
            },
            axisPlacement: 'auto',
            axisSoftMin: 0,
            barAlignment: 0,
            scaleDistribution: {
              type: 'linear',
            },
            thresholdsStyle: {
              mode: 'off',
            },
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
        },
        overrides: [
          {
            matcher: {
              id: 'byRegexp',
              options: '.*[:/] unavailable$',
            },
            properties: [
              {
                id: 'color',
                value: {
                  mode: 'fixed',
                  fixedColor: 'dark-red',
                },
              },
            ],
          },
          {
            matcher: {
              id: 'byRegexp',
              options: '.*[:/] junk$',
            },
            properties: [
              {
                id: 'color',
                value: {
                  mode: 'fixed',
                  fixedColor: 'purple',
                },
              },
            ],
          },
        ],
      },
      options: {
        legend: {
          displayMode: 'table',
          placement: 'bottom',
          showLegend: true,
          calcs: [
            'lastNotNull',
            'max',
          ],
        },
        tooltip: {
          mode: 'multi',
          sort: 'desc',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'count by (phase, reason) (mailbox_probe_failed_info{job=~"$job", instance=~"$instance", target=~"$target"})',
          legendFormat: '{{phase}}: {{reason}}',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'table',
      id: 17,
      title: 'Current failures',
      description: 'Every check whose last probe failed: phase and reason (mailbox_probe_failed_info) and failures in a row. Empty while everything works. Click a target to drill down.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 7,
        w: 24,
        x: 0,
        y: 44,
      },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
            ],
          },
          color: {
            mode: 'thresholds',
          },
        },
        overrides: [
          {
            matcher: {
              id: 'byName',
              options: 'target',
            },
            properties: [
              {
                id: 'links',
                value: [
                  {
                    title: 'Open ${__data.fields.target} in the target dashboard',
                    url: '/d/mailbox-target/mailbox-exporter-target?${datasource:queryparam}&${job:queryparam}&${instance:queryparam}&var-target=${__data.fields.target}&${__url_time_range}',
                  },
                ],
              },
            ],
          },
          {
            matcher: {
              id: 'byName',
              options: 'Failures in a row',
            },
            properties: [
              {
                id: 'custom.cellOptions',
                value: {
                  type: 'color-text',
                },
              },
              {
                id: 'thresholds',
                value: {
                  mode: 'absolute',
                  steps: [
                    {
                      color: 'orange',
                      value: null,
                    },
                    {
                      color: 'red',
                      value: 2,
                    },
                  ],
                },
              },
            ],
          },
          {
            matcher: {
              id: 'byName',
              options: 'reason',
            },
            properties: [
              {
                id: 'custom.cellOptions',
                value: {
                  type: 'color-text',
                },
              },
              {
                id: 'color',
                value: {
                  mode: 'fixed',
                  fixedColor: 'text',
                },
              },
              {
                id: 'mappings',
                value: [
                  {
                    type: 'value',
                    options: {
                      unavailable: {
                        index: 0,
                        color: 'dark-red',
                        text: 'unavailable',
                      },
                      junk: {
                        index: 1,
                        color: 'purple',
                        text: 'junk',
                      },
                    },
                  },
                ],
              },
            ],
          },
        ],
      },
      options: {
        showHeader: true,
        cellHeight: 'sm',
        footer: {
          show: false,
          reducer: [
            'sum',
          ],
          countRows: false,
          fields: '',
        },
        sortBy: [
          {
            displayName: 'Failures in a row',
            desc: true,
          },
        ],
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox_probe_consecutive_failures{job=~"$job", instance=~"$instance", target=~"$target"}\n* on (job, instance, target, check) group_left (phase, reason)\nmailbox_probe_failed_info{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '__auto',
          range: false,
          instant: true,
          format: 'table',
          refId: 'A',
        },
      ],
      transformations: [
        {
          id: 'organize',
          options: {
            excludeByName: {
              Time: true,
              __name__: true,
            },
            renameByName: {
              Value: 'Failures in a row',
            },
            indexByName: {
              target: 0,
              check: 1,
              phase: 2,
              reason: 3,
              Value: 4,
              instance: 5,
              job: 6,
            },
          },
        },
      ],
    },
    {
      type: 'row',
      id: 18,
      title: 'Logins',
      collapsed: false,
      gridPos: {
        h: 1,
        w: 24,
        x: 0,
        y: 51,
      },
      panels: [],
    },
    {
      type: 'state-timeline',
      id: 19,
      title: 'Login checks',
      description: 'Outcome of the login checks (smtp_login, imap_login and every other check named *_login): fresh sessions that connect, negotiate TLS and authenticate; for the mail APIs, a token and a read of the mailbox.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 8,
        x: 0,
        y: 52,
      },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'red',
                value: null,
              },
              {
                color: 'green',
                value: 1,
              },
            ],
          },
          color: {
            mode: 'thresholds',
          },
          custom: {
            fillOpacity: 80,
            lineWidth: 0,
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
          mappings: [
            {
              type: 'value',
              options: {
                '0': {
                  text: 'FAIL',
                  color: 'red',
                  index: 0,
                },
                '1': {
                  text: 'OK',
                  color: 'green',
                  index: 1,
                },
              },
            },
          ],
        },
        overrides: [],
      },
      options: {
        mergeValues: true,
        showValue: 'never',
        alignValue: 'left',
        rowHeight: 0.8,
        legend: {
          displayMode: 'list',
          placement: 'bottom',
          showLegend: false,
        },
        tooltip: {
          mode: 'single',
          sort: 'none',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox_probe_success{check=~".+_login", job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{target}} / {{check}}',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'timeseries',
      id: 20,
      title: 'Login duration',
      description: 'Duration of the last login probe (every check named *_login), from connect to QUIT or LOGOUT (for the APIs: token and mailbox read).',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 8,
        x: 8,
        y: 52,
      },
      fieldConfig: {
        defaults: {
          unit: 's',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
            ],
          },
          color: {
            mode: 'palette-classic',
          },
          custom: {
            drawStyle: 'line',
            lineWidth: 1,
            fillOpacity: 10,
            gradientMode: 'none',
            showPoints: 'never',
            pointSize: 4,
            spanNulls: false,
            lineInterpolation: 'linear',
            stacking: {
              mode: 'none',
              group: 'A',
            },
            axisPlacement: 'auto',
            axisSoftMin: 0,
            barAlignment: 0,
            scaleDistribution: {
              type: 'linear',
            },
            thresholdsStyle: {
              mode: 'off',
            },
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
        },
        overrides: [],
      },
      options: {
        legend: {
          displayMode: 'table',
          placement: 'bottom',
          showLegend: true,
          calcs: [
            'lastNotNull',
            'max',
          ],
        },
        tooltip: {
          mode: 'multi',
          sort: 'desc',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox_probe_duration_seconds{check=~".+_login", job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{target}} / {{check}}',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'timeseries',
      id: 21,
      title: 'Login authentication time',
      description: 'Time the server took to accept or refuse the credentials in the last login probe (phases smtp_auth, imap_auth and pop3_auth). Dovecot answers refusals after about 0.5 s.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 8,
        x: 16,
        y: 52,
      },
      fieldConfig: {
        defaults: {
          unit: 's',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
            ],
          },
          color: {
            mode: 'palette-classic',
          },
          custom: {
            drawStyle: 'line',
            lineWidth: 1,
            fillOpacity: 10,
            gradientMode: 'none',
            showPoints: 'never',
            pointSize: 4,
            spanNulls: false,
            lineInterpolation: 'linear',
            stacking: {
              mode: 'none',
              group: 'A',
            },
            axisPlacement: 'auto',
            axisSoftMin: 0,
            barAlignment: 0,
            scaleDistribution: {
              type: 'linear',
            },
            thresholdsStyle: {
              mode: 'off',
            },
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
        },
        overrides: [],
      },
      options: {
        legend: {
          displayMode: 'table',
          placement: 'bottom',
          showLegend: true,
          calcs: [
            'lastNotNull',
            'max',
          ],
        },
        tooltip: {
          mode: 'multi',
          sort: 'desc',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox_probe_phase_duration_seconds{check=~".+_login", phase=~".+_auth", job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{target}} / {{check}}',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'row',
      id: 22,
      title: 'Certificates and tokens',
      collapsed: false,
      gridPos: {
        h: 1,
        w: 24,
        x: 0,
        y: 60,
      },
      panels: [],
    },
    {
      type: 'bargauge',
      id: 23,
      title: 'TLS certificate expires in',
      description: 'Time until the leaf certificate each server presented last expires (mailbox_tls_certificate_expiry_timestamp_seconds - time()); orange within 14 days, red within 7. Empty for targets that do not use TLS.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 7,
        w: 12,
        x: 0,
        y: 61,
      },
      fieldConfig: {
        defaults: {
          unit: 's',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'red',
                value: null,
              },
              {
                color: 'orange',
                value: 604800,
              },
              {
                color: 'green',
                value: 1209600,
              },
            ],
          },
          color: {
            mode: 'thresholds',
          },
          min: 0,
        },
        overrides: [],
      },
      options: {
        reduceOptions: {
          calcs: [
            'lastNotNull',
          ],
          fields: '',
          values: false,
        },
        orientation: 'horizontal',
        displayMode: 'basic',
        valueMode: 'color',
        showUnfilled: true,
        namePlacement: 'left',
        minVizHeight: 16,
        minVizWidth: 8,
        maxVizHeight: 24,
        sizing: 'manual',
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox_tls_certificate_expiry_timestamp_seconds{job=~"$job", instance=~"$instance", target=~"$target"} - time()',
          legendFormat: '{{target}} {{protocol}}',
          range: false,
          instant: true,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'bargauge',
      id: 24,
      title: 'OAuth2 token expires in',
      description: 'Time until the access token last used expires (mailbox_oauth_token_expiry_timestamp_seconds - time()). Token refresh failures are counted as reason oauth_token in Failures by reason. Empty for targets with passwords.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 7,
        w: 12,
        x: 12,
        y: 61,
      },
      fieldConfig: {
        defaults: {
          unit: 's',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'red',
                value: null,
              },
              {
                color: 'orange',
                value: 300,
              },
              {
                color: 'green',
                value: 600,
              },
            ],
          },
          color: {
            mode: 'thresholds',
          },
          min: 0,
        },
        overrides: [],
      },
      options: {
        reduceOptions: {
          calcs: [
            'lastNotNull',
          ],
          fields: '',
          values: false,
        },
        orientation: 'horizontal',
        displayMode: 'basic',
        valueMode: 'color',
        showUnfilled: true,
        namePlacement: 'left',
        minVizHeight: 16,
        minVizWidth: 8,
        maxVizHeight: 24,
        sizing: 'manual',
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox_oauth_token_expiry_timestamp_seconds{job=~"$job", instance=~"$instance", target=~"$target"} - time()',
          legendFormat: '{{target}} {{protocol}}',
          range: false,
          instant: true,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'row',
      id: 25,
      title: 'Probe freshness and exporter',
      collapsed: false,
      gridPos: {
        h: 1,
        w: 24,
        x: 0,
        y: 68,
      },
      panels: [],
    },
    {
      type: 'timeseries',
      id: 26,
      title: 'Probe age in intervals',
      description: 'Time since the last probe of each check finished, divided by its configured interval (mailbox_probe_last_timestamp_seconds, mailbox_probe_interval_seconds). Around 1 is normal; MailboxProbesStale fires above 4 intervals.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 12,
        x: 0,
        y: 69,
      },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
              {
                color: 'orange',
                value: 3,
              },
            ],
          },
          color: {
            mode: 'palette-classic',
          },
          custom: {
            drawStyle: 'line',
            lineWidth: 1,
            fillOpacity: 10,
            gradientMode: 'none',
            showPoints: 'never',
            pointSize: 4,
            spanNulls: false,
            lineInterpolation: 'linear',
            stacking: {
              mode: 'none',
              group: 'A',
            },
            axisPlacement: 'auto',
            axisSoftMin: 0,
            barAlignment: 0,
            scaleDistribution: {
              type: 'linear',
            },
            thresholdsStyle: {
              mode: 'line+area',
            },
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
          min: 0,
        },
        overrides: [],
      },
      options: {
        legend: {
          displayMode: 'table',
          placement: 'bottom',
          showLegend: true,
          calcs: [
            'lastNotNull',
            'max',
          ],
        },
        tooltip: {
          mode: 'multi',
          sort: 'desc',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: '(time() - mailbox_probe_last_timestamp_seconds{job=~"$job", instance=~"$instance", target=~"$target"}) / mailbox_probe_interval_seconds{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{target}} / {{check}}',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'table',
      id: 27,
      title: 'Exporters',
      description: 'Every exporter: whether Prometheus can scrape it (up), whether its last configuration load succeeded, and how long ago the configuration was last loaded.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 4,
        w: 12,
        x: 12,
        y: 69,
      },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
            ],
          },
          color: {
            mode: 'thresholds',
          },
        },
        overrides: [
          {
            matcher: {
              id: 'byName',
              options: 'Scrape',
            },
            properties: [
              {
                id: 'mappings',
                value: [
                  {
                    type: 'value',
                    options: {
                      '0': {
                        text: 'DOWN',
                        color: 'red',
                        index: 0,
                      },
                      '1': {
                        text: 'UP',
                        color: 'green',
                        index: 1,
                      },
                    },
                  },
                ],
              },
              {
                id: 'custom.cellOptions',
                value: {
                  type: 'color-background',
                },
              },
            ],
          },
          {
            matcher: {
              id: 'byName',
              options: 'Last config load',
            },
            properties: [
              {
                id: 'mappings',
                value: [
                  {
                    type: 'value',
                    options: {
                      '0': {
                        text: 'FAILED',
                        color: 'orange',
                        index: 0,
                      },
                      '1': {
                        text: 'OK',
                        color: 'green',
                        index: 1,
                      },
                    },
                  },
                ],
              },
              {
                id: 'custom.cellOptions',
                value: {
                  type: 'color-background',
                },
              },
            ],
          },
          {
            matcher: {
              id: 'byName',
              options: 'Config loaded ago',
            },
            properties: [
              {
                id: 'unit',
                value: 's',
              },
            ],
          },
        ],
      },
      options: {
        showHeader: true,
        cellHeight: 'sm',
        footer: {
          show: false,
          reducer: [
            'sum',
          ],
          countRows: false,
          fields: '',
        },
        sortBy: [],
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'up{job=~"$job", instance=~"$instance"}',
          legendFormat: '__auto',
          range: false,
          instant: true,
          format: 'table',
          refId: 'A',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox_exporter_config_last_reload_successful{job=~"$job", instance=~"$instance"}',
          legendFormat: '__auto',
          range: false,
          instant: true,
          format: 'table',
          refId: 'B',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'time() - mailbox_exporter_config_last_reload_success_timestamp_seconds{job=~"$job", instance=~"$instance"}',
          legendFormat: '__auto',
          range: false,
          instant: true,
          format: 'table',
          refId: 'C',
        },
      ],
      transformations: [
        {
          id: 'merge',
          options: {},
        },
        {
          id: 'organize',
          options: {
            excludeByName: {
              Time: true,
              __name__: true,
            },
            renameByName: {
              'Value #A': 'Scrape',
              'Value #B': 'Last config load',
              'Value #C': 'Config loaded ago',
            },
            indexByName: {
              instance: 0,
              job: 1,
              'Value #A': 2,
              'Value #B': 3,
              'Value #C': 4,
            },
          },
        },
      ],
    },
    {
      type: 'state-timeline',
      id: 28,
      title: 'Exporter up and configuration',
      description: 'Over time: whether Prometheus could scrape each exporter (up) and whether its last configuration load succeeded (mailbox_exporter_config_last_reload_successful).',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 4,
        w: 12,
        x: 12,
        y: 73,
      },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'red',
                value: null,
              },
              {
                color: 'green',
                value: 1,
              },
            ],
          },
          color: {
            mode: 'thresholds',
          },
          custom: {
            fillOpacity: 80,
            lineWidth: 0,
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
          mappings: [
            {
              type: 'value',
              options: {
                '0': {
                  text: 'FAIL',
                  color: 'red',
                  index: 0,
                },
                '1': {
                  text: 'OK',
                  color: 'green',
                  index: 1,
                },
              },
            },
          ],
        },
        overrides: [],
      },
      options: {
        mergeValues: true,
        showValue: 'never',
        alignValue: 'left',
        rowHeight: 0.8,
        legend: {
          displayMode: 'list',
          placement: 'bottom',
          showLegend: false,
        },
        tooltip: {
          mode: 'single',
          sort: 'none',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'up{job=~"$job", instance=~"$instance"}',
          legendFormat: '{{instance}} scrape',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox_exporter_config_last_reload_successful{job=~"$job", instance=~"$instance"}',
          legendFormat: '{{instance}} config',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'B',
        },
      ],
    },
    {
      type: 'row',
      id: 29,
      title: 'Round-trip housekeeping',
      collapsed: false,
      gridPos: {
        h: 1,
        w: 24,
        x: 0,
        y: 77,
      },
      panels: [],
    },
    {
      type: 'timeseries',
      id: 30,
      title: 'Late arrivals',
      description: 'Probe messages that arrived after their round trip had given up as not_delivered (mailbox_roundtrip_late_arrivals_total): mail was slow rather than lost.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 7,
        w: 12,
        x: 0,
        y: 78,
      },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
            ],
          },
          color: {
            mode: 'palette-classic',
          },
          custom: {
            drawStyle: 'bars',
            lineWidth: 1,
            fillOpacity: 80,
            gradientMode: 'none',
            showPoints: 'never',
            pointSize: 4,
            spanNulls: false,
            lineInterpolation: 'linear',
            stacking: {
              mode: 'none',
              group: 'A',
            },
            axisPlacement: 'auto',
            axisSoftMin: 0,
            barAlignment: 0,
            scaleDistribution: {
              type: 'linear',
            },
            thresholdsStyle: {
              mode: 'off',
            },
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
        },
        overrides: [],
      },
      options: {
        legend: {
          displayMode: 'table',
          placement: 'bottom',
          showLegend: true,
          calcs: [
            'lastNotNull',
            'max',
          ],
        },
        tooltip: {
          mode: 'multi',
          sort: 'desc',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'sum by (job, instance, target) (increase(mailbox_roundtrip_late_arrivals_total{job=~"$job", instance=~"$instance", target=~"$target"}[$__rate_interval]))',
          legendFormat: '{{target}}',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'timeseries',
      id: 31,
      title: 'Probe message cleanup',
      description: 'Probe messages deleted from the mailbox (mailbox_cleanup_deleted_total) and round trips that could not delete what they found (mailbox_cleanup_failures_total) in each interval.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 7,
        w: 12,
        x: 12,
        y: 78,
      },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
            ],
          },
          color: {
            mode: 'palette-classic',
          },
          custom: {
            drawStyle: 'bars',
            lineWidth: 1,
            fillOpacity: 80,
            gradientMode: 'none',
            showPoints: 'never',
            pointSize: 4,
            spanNulls: false,
            lineInterpolation: 'linear',
            stacking: {
              mode: 'none',
              group: 'A',
            },
            axisPlacement: 'auto',
            axisSoftMin: 0,
            barAlignment: 0,
            scaleDistribution: {
              type: 'linear',
            },
            thresholdsStyle: {
              mode: 'off',
            },
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
        },
        overrides: [
          {
            matcher: {
              id: 'byRegexp',
              options: '.* failed',
            },
            properties: [
              {
                id: 'color',
                value: {
                  mode: 'fixed',
                  fixedColor: 'red',
                },
              },
            ],
          },
        ],
      },
      options: {
        legend: {
          displayMode: 'table',
          placement: 'bottom',
          showLegend: true,
          calcs: [
            'lastNotNull',
            'max',
          ],
        },
        tooltip: {
          mode: 'multi',
          sort: 'desc',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'sum by (job, instance, target) (increase(mailbox_cleanup_deleted_total{job=~"$job", instance=~"$instance", target=~"$target"}[$__rate_interval]))',
          legendFormat: '{{target}} deleted',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'sum by (job, instance, target) (increase(mailbox_cleanup_failures_total{job=~"$job", instance=~"$instance", target=~"$target"}[$__rate_interval]))',
          legendFormat: '{{target}} failed',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'B',
        },
      ],
    },
    {
      type: 'row',
      id: 32,
      title: 'Locations',
      collapsed: false,
      gridPos: {
        h: 1,
        w: 24,
        x: 0,
        y: 85,
      },
      panels: [],
    },
    {
      type: 'timeseries',
      id: 33,
      title: 'Locations that see each target failing',
      description: 'For each target, the locations (the ' + config.locationLabel + " label of the exporters) whose probes of it are failing, and how many in a row (the most of its checks). One location alone is that location's path (MailboxLocationPathFailing); several are an outage of the mail service. Without a " + config.locationLabel + ' label, one line per target.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 24,
        x: 0,
        y: 86,
      },
      fieldConfig: {
        defaults: {
          unit: 'none',
          min: 0,
          thresholds: {
            mode: 'absolute',
            steps: [
              {
                color: 'green',
                value: null,
              },
              {
                color: 'red',
                value: 2,
              },
            ],
          },
          color: {
            mode: 'palette-classic',
          },
          custom: {
            drawStyle: 'line',
            lineWidth: 1,
            fillOpacity: 10,
            gradientMode: 'none',
            showPoints: 'never',
            pointSize: 4,
            spanNulls: false,
            lineInterpolation: 'stepAfter',
            stacking: {
              mode: 'none',
              group: 'A',
            },
            axisPlacement: 'auto',
            axisSoftMin: 0,
            barAlignment: 0,
            scaleDistribution: {
              type: 'linear',
            },
            thresholdsStyle: {
              mode: 'line',
            },
            hideFrom: {
              legend: false,
              tooltip: false,
              viz: false,
            },
          },
        },
        overrides: [],
      },
      options: {
        legend: {
          displayMode: 'table',
          placement: 'bottom',
          showLegend: true,
          calcs: [
            'lastNotNull',
            'max',
          ],
        },
        tooltip: {
          mode: 'multi',
          sort: 'desc',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'max by (' + config.locationLabel + ', target) (mailbox_probe_consecutive_failures{job=~"$job", instance=~"$instance", target=~"$target"})',
          legendFormat: '{{target}} from {{' + config.locationLabel + '}}',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
  ] + locationRows.panels,
  refresh: config.dashboardRefresh,
  schemaVersion: 39,
  tags: [
    'mailbox-exporter',
  ],
  templating: {
    list: [
      {
        type: 'datasource',
        name: 'datasource',
        label: 'Data source',
        query: 'prometheus',
        current: {},
        hide: 0,
        includeAll: false,
        multi: false,
        options: [],
        refresh: 1,
        regex: '',
      },
      {
        type: 'query',
        name: 'job',
        label: 'job',
        datasource: {
          type: 'prometheus',
          uid: '${datasource}',
        },
        definition: 'label_values(mailbox_exporter_build_info, job)',
        query: {
          query: 'label_values(mailbox_exporter_build_info, job)',
          refId: 'PrometheusVariableQueryEditor-VariableQuery',
        },
        refresh: 2,
        regex: '',
        sort: 1,
        multi: true,
        includeAll: true,
        current: {
          selected: true,
          text: [
            'All',
          ],
          value: [
            '$__all',
          ],
        },
        options: [],
        hide: 0,
      },
      {
        type: 'query',
        name: 'instance',
        label: 'instance',
        datasource: {
          type: 'prometheus',
          uid: '${datasource}',
        },
        definition: 'label_values(mailbox_exporter_build_info{job=~"$job"}, instance)',
        query: {
          query: 'label_values(mailbox_exporter_build_info{job=~"$job"}, instance)',
          refId: 'PrometheusVariableQueryEditor-VariableQuery',
        },
        refresh: 2,
        regex: '',
        sort: 1,
        multi: true,
        includeAll: true,
        current: {
          selected: true,
          text: [
            'All',
          ],
          value: [
            '$__all',
          ],
        },
        options: [],
        hide: 0,
      },
      {
        type: 'query',
        name: 'target',
        label: 'target',
        datasource: {
          type: 'prometheus',
          uid: '${datasource}',
        },
        definition: 'label_values(mailbox_probe_interval_seconds{job=~"$job", instance=~"$instance"}, target)',
        query: {
          query: 'label_values(mailbox_probe_interval_seconds{job=~"$job", instance=~"$instance"}, target)',
          refId: 'PrometheusVariableQueryEditor-VariableQuery',
        },
        refresh: 2,
        regex: '',
        sort: 1,
        multi: true,
        includeAll: true,
        current: {
          selected: true,
          text: [
            'All',
          ],
          value: [
            '$__all',
          ],
        },
        options: [],
        hide: 0,
      },
    ] + [locationRows.variable],
  },
  time: {
    from: 'now-6h',
    to: 'now',
  },
  timepicker: {},
  timezone: '',
  title: 'Mailbox exporter / Overview',
  uid: 'mailbox-overview',
  version: 1,
  weekStart: '',
}
