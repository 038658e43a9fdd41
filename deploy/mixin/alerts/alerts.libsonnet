// Alerting groups: the groups without recording rules.
local locations = import '../lib/locations.libsonnet';
local yaml = import '../lib/yaml.libsonnet';

{
  local where = locations($._config),

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'mailbox-probes',
        rules: [
          {
            comment:: |||
              Many targets of one exporter failing together: one page instead of one per target
              (Alertmanager inhibits the per-target pages; see deploy/alertmanager/alertmanager.yml).
              Targets count once they have failed once (and, with several locations, enough
              locations see them failing), and one of them must page as a probe page would: so this
              fires no later than the first per-target page, and a blip pages nobody. A location's
              own network failing is MailboxLocationNetworkDown, not this.

              This alert and MailboxProviderOutage come first in the group, before the pages they
              inhibit: in each evaluation they reach Alertmanager first, and the pages they hold
              (see the per-target pages) read them as they are now.
            |||,
            alert: 'MailboxWidespreadOutage',
            expr: |||
              count by (%(exporter)s) (
              %(failing)s
              ) >= 3
              and
              count by (%(exporter)s) (
              %(failing)s
              )
              / count by (%(exporter)s) (%(all)s)
              >= 0.5
              and on (%(exporter)s)
              count by (%(exporter)s) (
              %(paging)s
              )
            ||| % {
              exporter: where.exporter,
              failing: where.indent(where.failingTargets, '  '),
              paging: where.indent(where.pagingTargets, '  '),
              all: where.allTargets,
            },
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
              count by (provider) (
              %(failing)s
                * on (%(perTarget)s) group_left (provider) mailbox_target_info{provider!=""}
              ) >= 3
              and
              count by (provider) (
              %(failing)s
                * on (%(perTarget)s) group_left (provider) mailbox_target_info{provider!=""}
              )
              / count by (provider) (
                %(all)s
                * on (%(perTarget)s) group_left (provider) mailbox_target_info{provider!=""}
              )
              >= 0.5
              and on (provider)
              count by (provider) (
              %(paging)s
                * on (%(perTarget)s) group_left (provider) mailbox_target_info{provider!=""}
              )
            ||| % {
              perTarget: where.perTarget,
              failing: where.indent(where.failingTargets, '  '),
              paging: where.indent(where.pagingTargets, '  '),
              all: where.allTargets,
            },
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

              Every probe page needs two or more failed probes in a row spanning %(span)ds (a blip
              of two minutes never pages), seen so from %(outage)d locations or from every location
              that watches the target if fewer do (with one location, or no %(label)s label, that
              one). Phase and reason are the latest failure's, in the description: they are not
              labels, so an alert keeps its identity while they change.
            ||| % { span: $._config.failingForSeconds, outage: $._config.outageLocations, label: $._config.locationLabel },
            alert: 'MailboxLoginFailing',
            expr: where.page('MailboxLoginFailing', '{check=~".+_login"}', '{reason=~"auth_rejected|auth_temporary|oauth_token"}'),
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Logins fail on {{ $labels.target }} ({{ $labels.check }}) while the server answers',
              runbook_url: 'docs/runbook.md#mailboxloginfailing',
            } + yaml.folded(|||
              New {{ $labels.check }} sessions to target {{ $labels.target }}%(where)s have failed
              {{ $value }} times in a row%(latest)s. Users cannot log in, although the server is
              reachable.%(seen)s
            ||| % { where: where.where, latest: where.latest(), seen: where.seenFrom }),
          },
          {
            alert: 'MailboxServerUnreachable',
            expr: where.page('MailboxServerUnreachable', '{check=~".+_login"}', '{reason!~"auth_rejected|auth_temporary|oauth_token"}'),
            labels: { severity: 'critical' },
            annotations: {
              summary: '{{ $labels.check }} server of {{ $labels.target }} cannot be used',
              runbook_url: 'docs/runbook.md#mailboxserverunreachable',
            } + yaml.folded(|||
              New {{ $labels.check }} sessions to target {{ $labels.target }}%(where)s have failed
              {{ $value }} times in a row%(latest)s.%(seen)s
            ||| % {
              where: where.where,
              latest: where.latest(|||
                : {{ if eq .Labels.reason "unavailable" -}}
                the server answers that the service is not available: an outage of the server or its
                provider
                {{- else if eq .Labels.reason "throttled" -}}
                the server limits this client (connections, rate or quota)
                {{- else -}}
                the server cannot be reached or does not answer properly
                {{- end }}
              |||),
              seen: where.seenFrom,
            }),
          },
          {
            comment:: |||
              A round trip failing to connect or log in is left to the login alerts when the target
              has the login check of that protocol: they are faster, and they stop paging when
              logins recover, while the round trip shows its failure until its next run. For the
              mail APIs (Graph, Gmail) logging in is getting a token and reading the mailbox.
            |||,
            alert: 'MailboxRoundTripFailing',
            expr: where.page('MailboxRoundTripFailing', '{check="roundtrip"}', '{check="roundtrip", reason!~"not_delivered|junk"}', where.loc(|||
              unless on (job, instance, <location>, target)
              (
                label_replace(
                  mailbox_probe_failed_info{check="roundtrip"},
                  "protocol", "$1$2", "phase", "(smtp|imap|pop3)_(?:connect|tls|auth)|(graph|gmail)_(?:auth|select)"
                )
                and on (job, instance, <location>, target, protocol)
                label_replace(
                  mailbox_probe_success{check=~".+_login"},
                  "protocol", "$1", "check", "(.+)_login"
                )
              )
            |||)),
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Mail cannot get through on {{ $labels.target }}',
              runbook_url: 'docs/runbook.md#mailboxroundtripfailing',
            } + yaml.folded(|||
              The round trip of target {{ $labels.target }}%(where)s has failed {{ $value }} times
              in a row%(latest)s.%(seen)s
            ||| % { where: where.where, latest: where.latest(), seen: where.seenFrom }),
          },
          {
            alert: 'MailboxDeliveryStalled',
            expr: where.page('MailboxDeliveryStalled', '{check="roundtrip"}', '{check="roundtrip", reason="not_delivered"}'),
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Mail to {{ $labels.target }} is accepted but not delivered',
              runbook_url: 'docs/runbook.md#mailboxdeliverystalled',
            } + yaml.folded(|||
              The last {{ $value }} probe messages to target {{ $labels.target }}%(where)s were
              accepted by the SMTP server but did not arrive in the mailbox within the probe
              timeout.%(seen)s
            ||| % { where: where.where, seen: where.seenFrom }),
          },
          {
            comment:: |||
              Junk placement is a mail-flow problem for every user of the mailbox: mail from
              outside may be filed there too.
            |||,
            alert: 'MailboxProbeFiledAsJunk',
            expr: where.page('MailboxProbeFiledAsJunk', '{check="roundtrip"}', '{check="roundtrip", reason="junk"}'),
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Mail to {{ $labels.target }} is filed as junk',
              runbook_url: 'docs/runbook.md#mailboxprobefiledasjunk',
            } + yaml.folded(|||
              The last {{ $value }} probe messages to target {{ $labels.target }}%(where)s arrived
              in the junk folder instead of the Inbox.%(seen)s
            ||| % { where: where.where, seen: where.seenFrom }),
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
            alert: 'MailboxCredentialExpiringSoon',
            expr: 'mailbox_credential_expiry_timestamp_seconds - time() < 14 * 86400',
            'for': $._config.forDurations.MailboxCredentialExpiringSoon,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'The app credential of {{ $labels.target }} ({{ $labels.protocol }}) expires soon',
              runbook_url: 'docs/runbook.md#mailboxcredentialexpiringsoon',
            } + yaml.folded(|||
              The certificate or client secret that target {{ $labels.target }} authenticates
              its {{ $labels.protocol }} app with expires in {{ $value | humanizeDuration }}:
              after that no token can be had and its checks fail with auth_rejected.
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
        name: 'mailbox-locations',
        rules: [
          {
            comment:: |||
              A target failing from one location while enough others see it working: that
              location's path to it (its network, firewall, resolver or route), not the mail
              service. A ticket, not a page: the probe pages from that location are held back in the
              rule (they need the failure confirmed elsewhere), and Alertmanager inhibits any that
              slip through while this fires.
            |||,
            alert: 'MailboxLocationPathFailing',
            expr: |||
              (
                max by (%(perTarget)s) (
              %(failing)s
                )
                unless on (target)
                mailbox:target_outage
              )
              * on (%(perTarget)s) group_left (provider) mailbox_target_info
            ||| % {
              perTarget: where.perTarget,
              failing: where.indent(where.failingLong(''), '    '),
            },
            'for': $._config.forDurations.MailboxLocationPathFailing,
            labels: { severity: 'warning' },
            annotations: {
              summary: where.loc('{{ $labels.target }} fails from {{ index $labels "<location>" }} only'),
              runbook_url: 'docs/runbook.md#mailboxlocationpathfailing',
            } + yaml.folded(where.loc(|||
              Target {{ $labels.target }} has failed {{ $value }} probes in a row from location
              {{ index $labels "<location>" }} (exporter {{ $labels.instance }}), while other
              locations see it working
              {{- with printf `max by (<location>) (mailbox_probe_consecutive_failures{target=%q}) == 0` $labels.target | query }}
              {{- range $i, $s := sortByLabel "<location>" . }}{{ if $i }},{{ else }}:{{ end }} {{ index $s.Labels "<location>" }}{{ end }}
              {{- end }}. The path from {{ index $labels "<location>" }} to the server is broken; the
              mail service is not.
            |||)),
          },
          {
            comment:: |||
              Every target of one exporter failing with network reasons while another location
              sees some of them working: that exporter's own network. One page for the location,
              instead of a ticket per mailbox (Alertmanager inhibits its path alerts).
            |||,
            alert: 'MailboxLocationNetworkDown',
            expr: |||
              count by (%(exporter)s) (max by (%(perTarget)s) (mailbox_probe_failed_info{reason=~"%(network)s"}))
              == count by (%(exporter)s) (%(all)s)
              and
              count by (%(exporter)s) (%(all)s) >= 2
              unless on (%(exporter)s)
              mailbox_probe_failed_info{reason!~"%(network)s"}
              and on (%(exporter)s)
              max by (%(exporter)s) (
              %(failing)s
              )
              and on (%(exporter)s)
              (
                %(all)s
                and on (target)
                min by (target) (max by (%(location)s, target) (mailbox_probe_consecutive_failures)) == 0
              )
            ||| % {
              exporter: where.exporter,
              perTarget: where.perTarget,
              location: $._config.locationLabel,
              all: where.allTargets,
              network: std.join('|', $._config.networkReasons),
              failing: where.indent(where.failingLong(''), '  '),
            },
            keep_firing_for: $._config.keepFiringFor.MailboxLocationNetworkDown,
            labels: { severity: 'critical' },
            annotations: {
              summary: where.loc('Location {{ index $labels "<location>" }} cannot reach any mail server'),
              runbook_url: 'docs/runbook.md#mailboxlocationnetworkdown',
            } + yaml.folded(where.loc(|||
              All {{ $value }} targets of exporter {{ $labels.instance }} at location
              {{ index $labels "<location>" }} are failing with network reasons (dns,
              connect_refused, network, timeout, tls), while other locations reach some of them:
              the network of {{ index $labels "<location>" }} is down, not the mail service. Nobody
              watches the mailboxes from there until it is back.
            |||)),
            comments:: {
              keep_firing_for: |||
                While its targets recover one by one, keep inhibiting the path alerts of the others.
              |||,
            },
          },
        ],
      },
      {
        name: 'mailbox-exporter',
        rules: [
          {
            comment:: |||
              Four intervals: three, and one more for the probe's own timeout, which is never
              longer than its interval.
            |||,
            alert: 'MailboxProbesStale',
            expr: |||
              time() - mailbox_probe_last_timestamp_seconds
                > 4 * mailbox_probe_interval_seconds
            |||,
            'for': $._config.forDurations.MailboxProbesStale,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'No probe of {{ $labels.target }} ({{ $labels.check }}) has finished lately',
              runbook_url: 'docs/runbook.md#mailboxprobesstale',
            } + yaml.folded(|||
              The last {{ $labels.check }} probe of target {{ $labels.target }} finished
              {{ $value | humanizeDuration }} ago, more than four intervals: its results on
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
