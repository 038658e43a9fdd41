// The overview's rows per location: one row repeated for each value of the `location` variable
// (the values of _config.locationLabel), each showing what the exporters of that location see.
// Without a location label the variable has no values and Grafana shows the row once, for
// every exporter: "All" is `.*`, and the empty value Grafana's newer renderer uses matches the
// series that have no location label.
function(config, y) {
  local label = config.locationLabel,
  local datasource = { type: 'prometheus', uid: '${datasource}' },
  local selector = 'job=~"$job", instance=~"$instance", target=~"$target", ' + label + '=~"$location"',
  local query(expr, legend, instant=false) = {
    datasource: datasource,
    editorMode: 'code',
    expr: expr,
    legendFormat: legend,
    range: !instant,
    instant: instant,
    format: 'time_series',
    refId: 'A',
  },

  variable: {
    type: 'query',
    name: 'location',
    label: label,
    description: 'The locations the exporters probe from (the ' + label + ' label Prometheus adds); the rows below repeat for each one chosen.',
    datasource: datasource,
    definition: 'label_values(mailbox_probe_success{job=~"$job", instance=~"$instance"}, ' + label + ')',
    query: {
      query: 'label_values(mailbox_probe_success{job=~"$job", instance=~"$instance"}, ' + label + ')',
      refId: 'PrometheusVariableQueryEditor-VariableQuery',
    },
    refresh: 2,
    regex: '',
    sort: 1,
    multi: true,
    includeAll: true,
    allValue: '.*',
    current: { selected: true, text: ['All'], value: ['$__all'] },
    options: [],
    hide: 0,
  },

  panels: [
    {
      type: 'row',
      id: 40,
      title: 'Seen from $location',
      collapsed: false,
      repeat: 'location',
      gridPos: { h: 1, w: 24, x: 0, y: y },
      panels: [],
    },
    {
      type: 'stat',
      id: 41,
      title: 'Failing checks from $location',
      description: "Checks whose last probe from this location failed (the sum of 1 - mailbox_probe_success of its exporters). Failing here while other locations are fine is this location's path.",
      datasource: datasource,
      gridPos: { h: 7, w: 4, x: 0, y: y + 1 },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [{ color: 'green', value: null }, { color: 'red', value: 1 }],
          },
          color: { mode: 'thresholds' },
        },
        overrides: [],
      },
      options: {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        orientation: 'auto',
        textMode: 'value',
        colorMode: 'background',
        graphMode: 'none',
        justifyMode: 'auto',
        wideLayout: true,
        showPercentChange: false,
      },
      targets: [query('sum(1 - mailbox_probe_success{' + selector + '})', 'failing', true)],
    },
    {
      type: 'state-timeline',
      id: 42,
      title: 'Probe success from $location',
      description: 'mailbox_probe_success of every target and check as this location sees it: green while the last probe succeeded, red while it failed.',
      datasource: datasource,
      gridPos: { h: 7, w: 10, x: 4, y: y + 1 },
      fieldConfig: {
        defaults: {
          unit: 'none',
          thresholds: {
            mode: 'absolute',
            steps: [{ color: 'red', value: null }, { color: 'green', value: 1 }],
          },
          color: { mode: 'thresholds' },
          custom: { fillOpacity: 80, lineWidth: 0, hideFrom: { legend: false, tooltip: false, viz: false } },
          mappings: [
            {
              type: 'value',
              options: {
                '0': { text: 'FAIL', color: 'red', index: 0 },
                '1': { text: 'OK', color: 'green', index: 1 },
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
        legend: { displayMode: 'list', placement: 'bottom', showLegend: false },
        tooltip: { mode: 'single', sort: 'none' },
      },
      targets: [
        query('min by (target, check) (mailbox_probe_success{' + selector + '})', '{{target}} / {{check}}'),
      ],
    },
    {
      type: 'timeseries',
      id: 43,
      title: 'Delivery time from $location (p90)',
      description: 'The 90th percentile of round-trip delivery time per target, from the probes of this location: a slower path from one location shows here first.',
      datasource: datasource,
      gridPos: { h: 7, w: 10, x: 14, y: y + 1 },
      fieldConfig: {
        defaults: {
          unit: 's',
          min: 0,
          color: { mode: 'palette-classic' },
          custom: {
            drawStyle: 'line',
            lineWidth: 1,
            fillOpacity: 0,
            showPoints: 'never',
            spanNulls: true,
            hideFrom: { legend: false, tooltip: false, viz: false },
          },
        },
        overrides: [],
      },
      options: {
        legend: { displayMode: 'list', placement: 'bottom', showLegend: true, calcs: [] },
        tooltip: { mode: 'multi', sort: 'desc' },
      },
      targets: [
        query(
          'histogram_quantile(0.9, sum by (target, le) (rate(mailbox_roundtrip_delivery_seconds_bucket{' + selector + '}[$__rate_interval])))',
          '{{target}}'
        ),
      ],
    },
  ],
}
