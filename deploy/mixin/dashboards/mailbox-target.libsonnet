// The mailbox-target dashboard.
function(config) {
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
    ],
  },
  description: 'One mailbox target in detail: phase timings, delivery-time distribution and the reasons of recent failures.',
  editable: false,
  fiscalYearStartMonth: 0,
  graphTooltip: 1,
  id: null,
  links: [
    {
      type: 'link',
      title: 'Overview',
      tooltip: 'Every target at a glance',
      url: '/d/mailbox-overview/mailbox-exporter-overview',
      icon: 'dashboard',
      includeVars: false,
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
      title: 'Status',
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
      title: 'Success per check',
      description: 'Outcome of the last probe of each check (mailbox_probe_success).',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 5,
        w: 6,
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
          expr: 'mailbox_probe_success{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{check}}',
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
      title: 'Consecutive failures',
      description: 'Failed probes in a row per check (mailbox_probe_consecutive_failures); the alerts page from 2.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 5,
        w: 6,
        x: 6,
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
                color: 'orange',
                value: 1,
              },
              {
                color: 'red',
                value: 2,
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
          expr: 'mailbox_probe_consecutive_failures{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{check}}',
          range: false,
          instant: true,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'stat',
      id: 4,
      title: 'Time since last success',
      description: 'How long ago the last successful probe of each check ended: while the check fails, mailbox_probe_last_success_timestamp_seconds; while it succeeds, its last probe (mailbox_probe_last_timestamp_seconds). No value: no probe has succeeded since the exporter started.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 5,
        w: 6,
        x: 12,
        y: 1,
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
        textMode: 'value_and_name',
        colorMode: 'none',
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
          expr: 'time() - (\n  mailbox_probe_last_success_timestamp_seconds{job=~"$job", instance=~"$instance", target=~"$target"}\n  or (mailbox_probe_last_timestamp_seconds{job=~"$job", instance=~"$instance", target=~"$target"} and mailbox_probe_success{job=~"$job", instance=~"$instance", target=~"$target"} == 1)\n)',
          legendFormat: '{{check}}',
          range: false,
          instant: true,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'stat',
      id: 5,
      title: 'Availability and error budget (30 days)',
      description: 'Round-trip availability over 30 days and the share of the error budget left (recording rules mailbox:roundtrip_availability:ratio_rate30d and mailbox:roundtrip_error_budget:remaining30d).',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 5,
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
                color: 'green',
                value: null,
              },
            ],
          },
          color: {
            mode: 'thresholds',
          },
          decimals: 2,
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
        colorMode: 'none',
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
          legendFormat: 'availability',
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
          expr: 'mailbox:roundtrip_error_budget:remaining30d{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: 'budget left',
          range: false,
          instant: true,
          format: 'time_series',
          refId: 'B',
        },
      ],
    },
    {
      type: 'row',
      id: 6,
      title: 'Timings',
      collapsed: false,
      gridPos: {
        h: 1,
        w: 24,
        x: 0,
        y: 6,
      },
      panels: [],
    },
    {
      type: 'timeseries',
      id: 7,
      title: 'Round-trip phase durations',
      description: 'Time spent in each phase of the last round trip, stacked (mailbox_probe_phase_duration_seconds{check="roundtrip"}); delivery is the time from the server accepting the message to its arrival.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 9,
        w: 12,
        x: 0,
        y: 7,
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
            fillOpacity: 40,
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
          expr: 'mailbox_probe_phase_duration_seconds{check="roundtrip", job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{phase}}',
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
      title: 'Login phase durations',
      description: 'Time spent in each phase of the last login probes (smtp, imap, graph, gmail) (mailbox_probe_phase_duration_seconds).',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 9,
        w: 12,
        x: 12,
        y: 7,
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
          expr: 'mailbox_probe_phase_duration_seconds{check=~".+_login", job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{check}} {{phase}}',
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
      title: 'Probe duration',
      description: 'Duration of the last probe of each check (mailbox_probe_duration_seconds), with the configured interval (dashed), which its timeout never exceeds, for comparison.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 8,
        x: 0,
        y: 16,
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
        overrides: [
          {
            matcher: {
              id: 'byRegexp',
              options: '.* interval',
            },
            properties: [
              {
                id: 'custom.lineStyle',
                value: {
                  fill: 'dash',
                  dash: [
                    10,
                    10,
                  ],
                },
              },
              {
                id: 'custom.fillOpacity',
                value: 0,
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
          expr: 'mailbox_probe_duration_seconds{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{check}}',
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
          expr: 'mailbox_probe_interval_seconds{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{check}} interval',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'B',
        },
      ],
    },
    {
      type: 'heatmap',
      id: 10,
      title: 'Delivery time distribution',
      description: 'How many probe messages arrived within each delivery-time bucket per interval (mailbox_roundtrip_delivery_seconds histogram).',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 8,
        x: 8,
        y: 16,
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
            scaleDistribution: {
              type: 'linear',
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
        calculate: false,
        cellGap: 1,
        color: {
          mode: 'scheme',
          scheme: 'Oranges',
          fill: 'dark-orange',
          scale: 'exponential',
          exponent: 0.5,
          steps: 64,
          reverse: false,
        },
        exemplars: {
          color: 'rgba(255,0,255,0.7)',
        },
        filterValues: {
          le: 1e-09,
        },
        legend: {
          show: true,
        },
        rowsFrame: {
          layout: 'le',
        },
        tooltip: {
          mode: 'single',
          yHistogram: false,
          showColorScale: false,
        },
        yAxis: {
          axisPlacement: 'left',
          reverse: false,
          unit: 's',
        },
        cellValues: {
          unit: 'none',
        },
      },
      targets: [
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'sum by (le) (increase(mailbox_roundtrip_delivery_seconds_bucket{job=~"$job", instance=~"$instance", target=~"$target"}[$__rate_interval]))',
          legendFormat: '{{le}}',
          range: true,
          instant: false,
          format: 'heatmap',
          refId: 'A',
        },
      ],
    },
    {
      type: 'timeseries',
      id: 11,
      title: 'Delivery time quantiles',
      description: '50th, 90th and 99th percentile of delivery time over the rate interval, and the 90th percentile over 30 minutes (recording rule) that MailboxDeliverySlow watches.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 8,
        x: 16,
        y: 16,
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
          legendFormat: 'p50',
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
          legendFormat: 'p90',
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
          legendFormat: 'p99',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'C',
        },
        {
          datasource: {
            type: 'prometheus',
            uid: '${datasource}',
          },
          editorMode: 'code',
          expr: 'mailbox:roundtrip_delivery_seconds:p90_rate30m{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: 'p90 (30 min)',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'D',
        },
      ],
    },
    {
      type: 'row',
      id: 12,
      title: 'Failures',
      collapsed: false,
      gridPos: {
        h: 1,
        w: 24,
        x: 0,
        y: 24,
      },
      panels: [],
    },
    {
      type: 'timeseries',
      id: 13,
      title: 'Failures by reason',
      description: 'Failed probes per check and reason in each interval (mailbox_probe_failures_total); reasons with no failures are left out. The series of a reason begins at its first failure, which the interval where it appears does not count.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 12,
        x: 0,
        y: 25,
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
          legendFormat: '{{check}}: {{reason}}',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'state-timeline',
      id: 14,
      title: 'Failing phase and reason over time',
      description: 'While a check fails: the phase and reason of its last failure (mailbox_probe_failed_info). Empty while everything works.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 8,
        w: 12,
        x: 12,
        y: 25,
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
                '1': {
                  text: 'failing',
                  color: 'red',
                  index: 0,
                },
              },
            },
          ],
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
          expr: 'mailbox_probe_failed_info{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{check}}: {{phase}} / {{reason}}',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'A',
        },
      ],
    },
    {
      type: 'state-timeline',
      id: 15,
      title: 'Success per check over time',
      description: 'mailbox_probe_success per check: green while the last probe succeeded, red while it failed.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 6,
        w: 12,
        x: 0,
        y: 33,
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
          legendFormat: '{{check}}',
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
      title: 'Consecutive failures over time',
      description: 'Failed probes in a row per check (mailbox_probe_consecutive_failures); the alerts page from 2.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 6,
        w: 12,
        x: 12,
        y: 33,
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
          expr: 'mailbox_probe_consecutive_failures{job=~"$job", instance=~"$instance", target=~"$target"}',
          legendFormat: '{{check}}',
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
      title: 'Last failure: phase and reason',
      description: 'Checks whose last probe failed, with the phase and reason (mailbox_probe_failed_info), and how many probes in a row have failed. Empty while everything works.',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 6,
        w: 24,
        x: 0,
        y: 39,
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
      title: 'Round-trip housekeeping',
      collapsed: false,
      gridPos: {
        h: 1,
        w: 24,
        x: 0,
        y: 45,
      },
      panels: [],
    },
    {
      type: 'timeseries',
      id: 19,
      title: 'Late arrivals and cleanup',
      description: 'Per interval: probe messages that arrived after their round trip gave up (mailbox_roundtrip_late_arrivals_total), probe messages deleted (mailbox_cleanup_deleted_total) and round trips that could not delete them (mailbox_cleanup_failures_total).',
      datasource: {
        type: 'prometheus',
        uid: '${datasource}',
      },
      gridPos: {
        h: 7,
        w: 24,
        x: 0,
        y: 46,
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
          legendFormat: 'late arrivals',
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
          expr: 'sum by (job, instance, target) (increase(mailbox_cleanup_deleted_total{job=~"$job", instance=~"$instance", target=~"$target"}[$__rate_interval]))',
          legendFormat: 'deleted',
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
          expr: 'sum by (job, instance, target) (increase(mailbox_cleanup_failures_total{job=~"$job", instance=~"$instance", target=~"$target"}[$__rate_interval]))',
          legendFormat: 'cleanup failed',
          range: true,
          instant: false,
          format: 'time_series',
          refId: 'C',
        },
      ],
    },
  ],
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
        multi: false,
        includeAll: false,
        current: {},
        options: [],
        hide: 0,
      },
    ],
  },
  time: {
    from: 'now-6h',
    to: 'now',
  },
  timepicker: {},
  timezone: '',
  title: 'Mailbox exporter / Target',
  uid: 'mailbox-target',
  version: 1,
  weekStart: '',
}
