// The groups with recording rules. Each keeps the alerts that read its records: rules of a
// group are evaluated in order, so those alerts see this evaluation's values.
local locations = import '../lib/locations.libsonnet';
local yaml = import '../lib/yaml.libsonnet';

// The error ratio over `window` above `factor` times the budget, at this location and at
// every location watching the target.
local everywhere(window, factor) =
  local ratio = 'mailbox:roundtrip_error_ratio:rate' + window;
  local limit = '%g * (1 - scalar(mailbox:roundtrip_availability:objective))' % factor;
  '%(r)s > %(l)s\n    and on (target) min by (target) (%(r)s) > %(l)s' % { r: ratio, l: limit };

{
  local where = locations($._config),

  prometheusRules+:: {
    groups+: [
      {
        name: 'mailbox-outage-locations',
        rules: [
          {
            comment:: |||
              Targets failing as a probe page says (two or more failed probes in a row spanning
              failingForSeconds) from enough locations: outageLocations of those that watch the
              target, or all of them if fewer do. The probe pages, the widespread and provider
              outages need it; the path alert fires without it. Alerts read it from the previous
              evaluation: one evaluation later at most.
            |||,
            record: 'mailbox:target_outage',
            expr: where.recordings['mailbox:target_outage'],
          },
          {
            comment:: |||
              Targets failing at all (one failed probe or more) from as many locations: the
              targets the widespread and provider outages count.
            |||,
            record: 'mailbox:target_failing_seen',
            expr: where.recordings['mailbox:target_failing_seen'],
          },
        ],
      },
      {
        name: 'mailbox-provider-status',
        rules: [
          {
            comment:: |||
              How much earlier the exporter knew: the provider's start time of each open incident
              minus when the earliest check still failing at that provider began to fail (positive:
              our failures came first). It exists while the incident is open and checks at the
              provider are failing; its history keeps the value.
            |||,
            record: 'mailbox:provider_first_failure_timestamp_seconds',
            expr: |||
              min by (provider) (
                mailbox_probe_failing_since_timestamp_seconds
                * on (job, instance, target) group_left (provider) mailbox_target_info{provider!=""}
              )
            |||,
          },
          {
            record: 'mailbox:provider_incident_lead_seconds',
            expr: |||
              max by (provider, service, incident) (mailbox_provider_incident_start_timestamp_seconds)
              - on (provider) group_left
              mailbox:provider_first_failure_timestamp_seconds
            |||,
          },
        ],
      },
      {
        name: 'mailbox-delivery-time',
        rules: [
          {
            record: 'mailbox:roundtrip_delivery_seconds:p50_rate30m',
            expr: |||
              histogram_quantile(0.5, sum by (job, instance, %(location)s, target, le) (rate(mailbox_roundtrip_delivery_seconds_bucket[30m])))
            ||| % { location: $._config.locationLabel },
          },
          {
            record: 'mailbox:roundtrip_delivery_seconds:p90_rate30m',
            expr: |||
              histogram_quantile(0.9, sum by (job, instance, %(location)s, target, le) (rate(mailbox_roundtrip_delivery_seconds_bucket[30m])))
            ||| % { location: $._config.locationLabel },
          },
          {
            record: 'mailbox:roundtrip_delivery_seconds:p99_rate30m',
            expr: |||
              histogram_quantile(0.99, sum by (job, instance, %(location)s, target, le) (rate(mailbox_roundtrip_delivery_seconds_bucket[30m])))
            ||| % { location: $._config.locationLabel },
          },
          {
            alert: 'MailboxDeliverySlow',
            expr: 'mailbox:roundtrip_delivery_seconds:p90_rate30m > 60',
            'for': $._config.forDurations.MailboxDeliverySlow,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Mail to {{ $labels.target }} is slow: 90% within {{ $value | humanizeDuration }}',
              runbook_url: 'docs/runbook.md#mailboxdeliveryslow',
            } + yaml.folded(|||
              Over the last 30 minutes, the 90th percentile of delivery time of target
              {{ $labels.target }} was {{ $value | humanizeDuration }} (threshold 1m).
            |||),
          },
        ],
      },
      {
        name: 'mailbox-slo',
        rules: [
          {
            comment:: |||
              The round-trip availability objective over 30 days: sloObjective in the mixin's
              config.libsonnet. See docs/alerting.md before going above 0.99.
            |||,
            record: 'mailbox:roundtrip_availability:objective',
            expr: 'vector(%g)' % $._config.sloObjective,
          },
          {
            comment:: |||
              The share of round trips failing over each window the burn-rate alerts use. Read
              from mailbox_probes_failed_total, present at 0 from the start: the counters by reason
              appear at their first failure, which rate() and increase() would not see.
            |||,
            record: 'mailbox:roundtrip_error_ratio:rate5m',
            expr: |||
              sum by (job, instance, %(location)s, target) (rate(mailbox_probes_failed_total{check="roundtrip"}[5m]))
              /
              sum by (job, instance, %(location)s, target) (rate(mailbox_probes_total{check="roundtrip"}[5m]))
            ||| % { location: $._config.locationLabel },
          },
          {
            record: 'mailbox:roundtrip_error_ratio:rate30m',
            expr: |||
              sum by (job, instance, %(location)s, target) (rate(mailbox_probes_failed_total{check="roundtrip"}[30m]))
              /
              sum by (job, instance, %(location)s, target) (rate(mailbox_probes_total{check="roundtrip"}[30m]))
            ||| % { location: $._config.locationLabel },
          },
          {
            record: 'mailbox:roundtrip_error_ratio:rate1h',
            expr: |||
              sum by (job, instance, %(location)s, target) (rate(mailbox_probes_failed_total{check="roundtrip"}[1h]))
              /
              sum by (job, instance, %(location)s, target) (rate(mailbox_probes_total{check="roundtrip"}[1h]))
            ||| % { location: $._config.locationLabel },
          },
          {
            record: 'mailbox:roundtrip_error_ratio:rate6h',
            expr: |||
              sum by (job, instance, %(location)s, target) (rate(mailbox_probes_failed_total{check="roundtrip"}[6h]))
              /
              sum by (job, instance, %(location)s, target) (rate(mailbox_probes_total{check="roundtrip"}[6h]))
            ||| % { location: $._config.locationLabel },
          },
          {
            record: 'mailbox:roundtrip_error_ratio:rate3d',
            expr: |||
              sum by (job, instance, %(location)s, target) (rate(mailbox_probes_failed_total{check="roundtrip"}[3d]))
              /
              sum by (job, instance, %(location)s, target) (rate(mailbox_probes_total{check="roundtrip"}[3d]))
            ||| % { location: $._config.locationLabel },
          },
          {
            comment:: |||
              Availability over 30 days and the share of the error budget left (1 = untouched).
            |||,
            record: 'mailbox:roundtrip_availability:ratio_rate30d',
            expr: |||
              1 - (
                sum by (job, instance, %(location)s, target) (increase(mailbox_probes_failed_total{check="roundtrip"}[30d]))
                /
                sum by (job, instance, %(location)s, target) (increase(mailbox_probes_total{check="roundtrip"}[30d]))
              )
            ||| % { location: $._config.locationLabel },
          },
          {
            record: 'mailbox:roundtrip_error_budget:remaining30d',
            expr: |||
              1 - (1 - mailbox:roundtrip_availability:ratio_rate30d)
                  / scalar(1 - mailbox:roundtrip_availability:objective)
            |||,
          },
          {
            comment:: |||
              Burn rates page for failures the probe pages miss (intermittent ones), so they stay quiet
              for a target whose probe page fired within burnQuietAfterPage: that outage is paged
              already, before and after it resolves. With several locations, a rate must be high
              from every location watching the target (the lowest of them): one location's path
              spends only its own measurements.
            |||,
            alert: 'MailboxErrorBudgetBurn',
            expr: |||
              (
                (
                    %(burn)s
                  and
                    %(burn5m)s
                )
                or
                (
                    %(burn6h)s
                  and
                    %(burn30m)s
                )
              )
              unless on (target)
              max_over_time(ALERTS{alertname=~"%(pages)s", alertstate="firing"}[%(quiet)s])
            ||| % {
              burn: everywhere('1h', 14.4),
              burn5m: everywhere('5m', 14.4),
              burn6h: everywhere('6h', 6),
              burn30m: everywhere('30m', 6),
              pages: 'MailboxLoginFailing|MailboxServerUnreachable|MailboxRoundTripFailing|MailboxDeliveryStalled|MailboxProbeFiledAsJunk',
              quiet: $._config.burnQuietAfterPage,
            },
            'for': $._config.forDurations.MailboxErrorBudgetBurn,
            labels: { severity: 'critical' },
            annotations: {
              summary: '{{ $labels.target }} burns its mail availability budget fast',
              runbook_url: 'docs/runbook.md#mailboxerrorbudgetburn',
            } + yaml.folded(|||
              Round trips of target {{ $labels.target }} are failing at a rate that spends the
              30-day error budget within days ({{ $value | humanizePercentage }} of probes are
              failing).
            |||),
          },
          {
            alert: 'MailboxErrorBudgetBurnSlow',
            expr: |||
              (
                  %(burn3d)s
                and
                  %(burn6h)s
              )
            ||| % { burn3d: everywhere('3d', 1), burn6h: everywhere('6h', 1) },
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $labels.target }} slowly spends its mail availability budget',
              runbook_url: 'docs/runbook.md#mailboxerrorbudgetburnslow',
            } + yaml.folded(|||
              Round trips of target {{ $labels.target }} fail often enough
              ({{ $value | humanizePercentage }} over 6 hours) to spend the 30-day error budget
              before the month is out.
            |||),
          },
        ],
      },
    ],
  },
}
