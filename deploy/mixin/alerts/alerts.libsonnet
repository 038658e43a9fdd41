// Alerting groups: the groups without recording rules.
local yaml = import '../lib/yaml.libsonnet';

{
  prometheusAlerts+:: {
    groups+: [
      {
        name: 'mailbox-probes',
        rules: [
          {
            comment:: |||
              Reasons split the login checks' pages in two. Credentials (auth_rejected,
              auth_temporary, oauth_token) page as MailboxLoginFailing; every other reason is the
              server's: nothing listens (connect_refused), the service says it is unavailable
              (unavailable: SMTP 421 / 4.3.x, IMAP BYE or [UNAVAILABLE], HTTP 5xx), it limits this
              client (throttled), it cannot be reached (dns, network, timeout, tls) or answers wrongly.
              Those page as MailboxServerUnreachable, and, seen on many targets or at one provider, as
              MailboxWidespreadOutage / MailboxProviderOutage, which count failing targets whatever
              their reason. A reason added to exporter/outcome.py therefore pages as the server's
              unless it is added to the credentials list below (tests/test_reasons.py checks both).
            |||,
            alert: 'MailboxLoginFailing',
            expr: |||
              (mailbox_probe_consecutive_failures{check=~"(smtp|imap|graph|gmail)_login"} >= 2)
              * on (job, instance, target, check) group_left (phase, reason)
              mailbox_probe_failed_info{reason=~"auth_rejected|auth_temporary|oauth_token"}
              * on (job, instance, target) group_left (provider) mailbox_target_info
            |||,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Logins fail on {{ $labels.target }} ({{ $labels.check }}) while the server answers',
              runbook_url: 'docs/runbook.md#mailboxloginfailing',
            } + yaml.folded(|||
              New {{ $labels.check }} sessions to target {{ $labels.target }} have failed
              {{ $value }} times in a row in phase {{ $labels.phase }} with reason
              {{ $labels.reason }}. Users cannot log in, although the server is reachable.
            |||),
          },
          {
            alert: 'MailboxServerUnreachable',
            expr: |||
              (mailbox_probe_consecutive_failures{check=~"(smtp|imap|graph|gmail)_login"} >= 2)
              * on (job, instance, target, check) group_left (phase, reason)
              mailbox_probe_failed_info{reason!~"auth_rejected|auth_temporary|oauth_token"}
              * on (job, instance, target) group_left (provider) mailbox_target_info
            |||,
            labels: { severity: 'critical' },
            annotations: {
              summary: '{{ $labels.check }} server of {{ $labels.target }} cannot be used: {{ $labels.reason }}',
              runbook_url: 'docs/runbook.md#mailboxserverunreachable',
            } + yaml.folded(|||
              New {{ $labels.check }} sessions to target {{ $labels.target }} have failed
              {{ $value }} times in a row in phase {{ $labels.phase }} with reason
              {{ $labels.reason }}: {{ if eq $labels.reason "unavailable" -}}
              the server answers that the service is not available: an outage of the server or
              its provider.
              {{- else if eq $labels.reason "throttled" -}}
              the server limits this client (connections, rate or quota).
              {{- else -}}
              the server cannot be reached or does not answer properly.
              {{- end }}
            |||),
          },
          {
            comment:: |||
              A round trip failing to connect or log in is left to the login alerts when the target
              has the login check of that protocol: they are faster, and they stop paging when
              logins recover, while the round trip shows its failure until its next run. For the
              mail APIs (Graph, Gmail) logging in is getting a token and reading the mailbox.
            |||,
            alert: 'MailboxRoundTripFailing',
            expr: |||
              label_replace(
                (mailbox_probe_consecutive_failures{check="roundtrip"} >= 2)
                * on (job, instance, target, check) group_left (phase, reason)
                mailbox_probe_failed_info{reason!~"not_delivered|junk"}
                * on (job, instance, target) group_left (provider) mailbox_target_info,
                "protocol", "$1$2", "phase", "(smtp|imap)_(?:connect|tls|auth)|(graph|gmail)_(?:auth|select)"
              )
              unless on (job, instance, target, protocol)
              label_replace(
                mailbox_probe_success{check=~"(smtp|imap|graph|gmail)_login"},
                "protocol", "$1", "check", "(smtp|imap|graph|gmail)_login"
              )
            |||,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Mail cannot get through on {{ $labels.target }}: {{ $labels.reason }} in {{ $labels.phase }}',
              runbook_url: 'docs/runbook.md#mailboxroundtripfailing',
            } + yaml.folded(|||
              The round trip of target {{ $labels.target }} has failed {{ $value }} times in a
              row in phase {{ $labels.phase }} with reason {{ $labels.reason }}.
            |||),
          },
          {
            alert: 'MailboxDeliveryStalled',
            expr: |||
              (mailbox_probe_consecutive_failures{check="roundtrip"} >= 2)
              * on (job, instance, target, check) group_left (phase, reason)
              mailbox_probe_failed_info{reason="not_delivered"}
              * on (job, instance, target) group_left (provider) mailbox_target_info
            |||,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Mail to {{ $labels.target }} is accepted but not delivered',
              runbook_url: 'docs/runbook.md#mailboxdeliverystalled',
            } + yaml.folded(|||
              The last {{ $value }} probe messages to target {{ $labels.target }} were accepted
              by the SMTP server but did not arrive in the mailbox within the probe timeout.
            |||),
          },
          {
            comment:: |||
              Junk placement is a mail-flow problem for every user of the mailbox: mail from
              outside may be filed there too.
            |||,
            alert: 'MailboxProbeFiledAsJunk',
            expr: |||
              (mailbox_probe_consecutive_failures{check="roundtrip"} >= 2)
              * on (job, instance, target, check) group_left (phase, reason)
              mailbox_probe_failed_info{reason="junk"}
              * on (job, instance, target) group_left (provider) mailbox_target_info
            |||,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Mail to {{ $labels.target }} is filed as junk',
              runbook_url: 'docs/runbook.md#mailboxprobefiledasjunk',
            } + yaml.folded(|||
              The last {{ $value }} probe messages to target {{ $labels.target }} arrived in the
              junk folder instead of the Inbox.
            |||),
          },
          {
            comment:: |||
              A sending domain's SPF or DMARC verdict that passed within the day and no longer
              does: its DNS (SPF record, DKIM key, DMARC policy) or its sending path changed.
              Mail still arrives, so this warns instead of paging.
            |||,
            alert: 'MailboxAuthenticationFailing',
            expr: |||
              mailbox_authentication_result{method=~"spf|dmarc", result!="pass"} == 1
              and on (job, instance, target, method)
              max_over_time(mailbox_authentication_result{method=~"spf|dmarc", result="pass"}[1d]) == 1
            |||,
            'for': $._config.forDurations.MailboxAuthenticationFailing,
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $labels.method | toUpper }} of the probes to {{ $labels.target }} is {{ $labels.result }}',
              runbook_url: 'docs/runbook.md#mailboxauthenticationfailing',
            } + yaml.folded(|||
              The receiving server's {{ $labels.method | toUpper }} verdict on the probe
              messages of target {{ $labels.target }} is {{ $labels.result }}; it was pass
              within the last day.
            |||),
          },
          {
            alert: 'MailboxCleanupFailing',
            expr: 'increase(mailbox_cleanup_failures_total[30m]) >= 3',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Probe messages are piling up in {{ $labels.target }}',
              runbook_url: 'docs/runbook.md#mailboxcleanupfailing',
            } + yaml.folded(|||
              {{ $value | humanize }} round trips of target {{ $labels.target }} in the last 30
              minutes could not delete their probe message.
            |||),
          },
          {
            alert: 'MailboxTLSCertificateExpiringSoon',
            expr: 'mailbox_tls_certificate_expiry_timestamp_seconds - time() < 14 * 86400',
            'for': $._config.forDurations.MailboxTLSCertificateExpiringSoon,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'TLS certificate of {{ $labels.target }} ({{ $labels.protocol }}) expires soon',
              runbook_url: 'docs/runbook.md#mailboxtlscertificateexpiringsoon',
            } + yaml.folded(|||
              The {{ $labels.protocol }} server certificate of target {{ $labels.target }}
              expires in {{ $value | humanizeDuration }}.
            |||),
          },
          {
            alert: 'MailboxTLSCertificateExpired',
            expr: 'mailbox_tls_certificate_expiry_timestamp_seconds - time() <= 0',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'TLS certificate of {{ $labels.target }} ({{ $labels.protocol }}) has expired',
              runbook_url: 'docs/runbook.md#mailboxtlscertificateexpired',
            } + yaml.folded(|||
              The {{ $labels.protocol }} server certificate of target {{ $labels.target }} has
              expired: clients that verify certificates cannot connect.
            |||),
          },
        ],
      },
      {
        name: 'mailbox-widespread',
        rules: [
          {
            comment:: |||
              Many targets of one exporter failing together: one page instead of one per target
              (Alertmanager inhibits the per-target pages; see deploy/alertmanager/alertmanager.yml).
              Targets count once they have failed once, and one of them must have failed twice in a
              row: so this fires no later than the first per-target page would, and a single failed
              probe of each target (a blip) still pages nobody.
            |||,
            alert: 'MailboxWidespreadOutage',
            expr: |||
              (
                count by (job, instance) (max by (job, instance, target) (mailbox_probe_consecutive_failures) >= 1) >= 3
              )
              and
              (
                count by (job, instance) (max by (job, instance, target) (mailbox_probe_consecutive_failures) >= 1)
                / count by (job, instance) (max by (job, instance, target) (mailbox_probe_consecutive_failures))
                >= 0.5
              )
              and
              (
                max by (job, instance) (mailbox_probe_consecutive_failures) >= 2
              )
            |||,
            keep_firing_for: $._config.keepFiringFor.MailboxWidespreadOutage,
            labels: { severity: 'critical' },
            annotations: {
              summary: '{{ $value }} mailboxes watched by {{ $labels.instance }} are failing together',
              runbook_url: 'docs/runbook.md#mailboxwidespreadoutage',
            } + yaml.folded(|||
              At least half of the targets of exporter {{ $labels.instance }}, {{ $value }} of
              them, are failing, and some have failed two or more probes in a row: a
              provider-wide or network-wide outage, or a problem of the exporter's own network.
              {{- with printf `mailbox_provider_status_last_success_timestamp_seconds and on (provider) mailbox_target_info{job="%s",instance="%s"}` $labels.job $labels.instance | query }}
              {{- with printf `max by (provider, incident, service, classification, status) (mailbox_provider_incident_info and on (provider) mailbox_target_info{job="%s",instance="%s"})` $labels.job $labels.instance | query }}
              {{- range $i, $s := . }}{{ if $i }};{{ else }} Acknowledged by the provider:{{ end }} {{ $s.Labels.provider }} {{ $s.Labels.incident }} ({{ $s.Labels.service }}, {{ $s.Labels.classification }}, {{ $s.Labels.status }}){{ end }}.
              {{- else }} Not acknowledged: no open incident of a watched service on the status pages of these targets' providers.
              {{- end }}
              {{- end }}
            |||),
            comments:: {
              keep_firing_for: |||
                While the targets recover one by one, the others still show their last failure until
                their next probe (up to a round-trip interval): keep inhibiting their pages meanwhile.
              |||,
            },
          },
          {
            comment:: |||
              Where provider_status is configured, both outage alerts say whether the provider has
              acknowledged: its open incidents of watched services (mailbox_provider_incident_info),
              or "Not acknowledged" while it has none. Without provider_status they say nothing of it.
              The same across exporters, for targets that carry a provider label (labels: in the
              exporter's configuration): a provider's outage pages once, wherever it is seen from.
            |||,
            alert: 'MailboxProviderOutage',
            expr: |||
              (
                count by (provider) (
                  (max by (job, instance, target) (mailbox_probe_consecutive_failures) >= 1)
                  * on (job, instance, target) group_left (provider) mailbox_target_info{provider!=""}
                ) >= 3
              )
              and
              (
                count by (provider) (
                  (max by (job, instance, target) (mailbox_probe_consecutive_failures) >= 1)
                  * on (job, instance, target) group_left (provider) mailbox_target_info{provider!=""}
                )
                / count by (provider) (
                  max by (job, instance, target) (mailbox_probe_consecutive_failures)
                  * on (job, instance, target) group_left (provider) mailbox_target_info{provider!=""}
                )
                >= 0.5
              )
              and
              (
                max by (provider) (
                  max by (job, instance, target) (mailbox_probe_consecutive_failures)
                  * on (job, instance, target) group_left (provider) mailbox_target_info{provider!=""}
                ) >= 2
              )
            |||,
            keep_firing_for: $._config.keepFiringFor.MailboxProviderOutage,
            labels: { severity: 'critical' },
            annotations: {
              summary: '{{ $value }} mailboxes at {{ $labels.provider }} are failing together',
              runbook_url: 'docs/runbook.md#mailboxprovideroutage',
            } + yaml.folded(|||
              At least half of the targets labelled provider={{ $labels.provider }}, {{ $value }}
              of them, are failing, and some have failed two or more probes in a row: an outage
              at {{ $labels.provider }}.
              {{- with printf `mailbox_provider_status_last_success_timestamp_seconds{provider="%s"}` $labels.provider | query }}
              {{- with printf `max by (incident, service, classification, status) (mailbox_provider_incident_info{provider="%s"})` $labels.provider | query }}
              {{- range $i, $s := . }}{{ if $i }};{{ else }} Acknowledged by the provider:{{ end }} {{ $s.Labels.incident }} ({{ $s.Labels.service }}, {{ $s.Labels.classification }}, {{ $s.Labels.status }}){{ end }}.
              {{- else }} Not acknowledged: no open incident of a watched service on its status page.
              {{- end }}
              {{- end }}
            |||),
          },
        ],
      },
      {
        name: 'mailbox-exporter',
        rules: [
          {
            alert: 'MailboxProbesStale',
            expr: |||
              time() - mailbox_probe_last_timestamp_seconds
                > 3 * mailbox_probe_interval_seconds + mailbox_probe_timeout_seconds
            |||,
            'for': $._config.forDurations.MailboxProbesStale,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'No probe of {{ $labels.target }} ({{ $labels.check }}) has finished lately',
              runbook_url: 'docs/runbook.md#mailboxprobesstale',
            } + yaml.folded(|||
              The last {{ $labels.check }} probe of target {{ $labels.target }} finished
              {{ $value | humanizeDuration }} ago, more than three intervals: its results on
              dashboards and alerts are stale.
            |||),
          },
          {
            alert: 'MailboxExporterDown',
            expr: 'up{%(jobSelector)s} == 0' % $._config,
            'for': $._config.forDurations.MailboxExporterDown,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'mailbox-exporter {{ $labels.instance }} is down',
              runbook_url: 'docs/runbook.md#mailboxexporterdown',
            } + yaml.folded(|||
              Prometheus cannot scrape mailbox-exporter at {{ $labels.instance }}: nobody is
              watching the mailboxes it checks.
            |||),
          },
          {
            alert: 'MailboxExporterAbsent',
            expr: 'absent(up{%(jobSelector)s})' % $._config,
            'for': $._config.forDurations.MailboxExporterAbsent,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'No mailbox-exporter is being scraped',
              runbook_url: 'docs/runbook.md#mailboxexporterabsent',
            } + yaml.folded(|||
              Prometheus has no scrape target with %(jobSelector)s: the exporter is not
              deployed or service discovery lost it.
            ||| % $._config),
          },
          {
            alert: 'MailboxExporterConfigReloadFailed',
            expr: 'mailbox_exporter_config_last_reload_successful == 0',
            'for': $._config.forDurations.MailboxExporterConfigReloadFailed,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'mailbox-exporter {{ $labels.instance }} rejected its new configuration',
              runbook_url: 'docs/runbook.md#mailboxexporterconfigreloadfailed',
            } + yaml.folded(|||
              The last configuration reload of {{ $labels.instance }} failed; it keeps probing
              with the previous configuration. The error is in its log.
            |||),
          },
        ],
      },
    ],
  },
}
