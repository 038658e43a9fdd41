// PromQL and template pieces that place a failure: at one location, confirmed from enough
// locations, or the location's own network. A function of _config; `<location>` in any text
// passed to `loc` becomes the configured location label.
function(config)
  local L = config.locationLabel;
  local loc(text) = std.strReplace(text, '<location>', L);
  local exporter = loc('job, instance, <location>');
  local perTarget = loc('job, instance, <location>, target');
  local perCheck = loc('job, instance, <location>, target, check');
  local failures = 'mailbox_probe_consecutive_failures';
  // A check failing as a page says: two or more failed probes in a row, spanning
  // failingForSeconds or more.
  local failingLong(selector) = |||
    %(failures)s%(selector)s >= 2
    and
    mailbox_probe_last_timestamp_seconds%(selector)s - mailbox_probe_failing_since_timestamp_seconds%(selector)s >= %(span)d
  ||| % { failures: failures, selector: selector, span: config.failingForSeconds };
  local indent(text, by) = std.join('\n', [
    if line == '' then '' else by + line
    for line in std.split(std.rstripChars(text, '\n'), '\n')
  ]);
  // How many locations watch each target, capped at outageLocations: the number of them
  // that must see it failing for an outage.
  local needed = loc(|||
    clamp_max(
      count by (target) (max by (<location>, target) (mailbox_probe_consecutive_failures)),
      %d
    )
  ||| % config.outageLocations);
  // Targets that enough locations see failing long: an outage of the mail service.
  local confirmed = loc(|||
    count by (target) (
      max by (<location>, target) (
    %s
      )
    )
    >= on (target)
  |||) % indent(failingLong(''), '    ') + needed;
  // Targets that enough locations see failing at all (one failed probe or more).
  local seen = loc(|||
    count by (target) (max by (<location>, target) (mailbox_probe_consecutive_failures) >= 1)
    >= on (target)
  |||) + needed;
  {
    // The recording rules of the mailbox-locations group (rules/rules.libsonnet).
    recordings: {
      'mailbox:target_outage': confirmed,
      'mailbox:target_failing_seen': seen,
    },
    loc: loc,
    exporter: exporter,
    perTarget: perTarget,
    perCheck: perCheck,
    failingLong: failingLong,
    confirmed: 'mailbox:target_outage',
    seen: 'mailbox:target_failing_seen',
    indent: indent,

    // The expression of the per-target page `alert`: `selector` picks the checks, `reasons` the
    // matcher on the last failure's reason, `unless` an extra exclusion (with its operator).
    //
    // A page that fires stays firing while an outage alert that inhibits it fires
    // (MailboxWidespreadOutage, MailboxProviderOutage): Alertmanager sends no resolution for an
    // inhibited alert (alertmanager#2754), so a page sent before the outage alert would never
    // be resolved where it was sent. Held, it resolves in the evaluation the outage alert
    // resolves in (they come first in the group), no longer inhibited: its resolution is
    // sent, and a page that was never sent stays unsent.
    page(alert, selector, reasons, unless='')::
      local held = |||
        %(failures)s%(selector)s
          * on (%(perTarget)s) group_left (provider) mailbox_target_info
          and on (%(perCheck)s) ALERTS{alertname="%(alert)s", alertstate="firing"}
      ||| % { failures: failures, selector: selector, perTarget: perTarget, perCheck: perCheck, alert: alert };
      |||
        (
        %(failing)s
          and on (%(perCheck)s)
          mailbox_probe_failed_info%(reasons)s
        %(unless)s  and on (target)
          %(confirmed)s
        )
        * on (%(perTarget)s) group_left (provider) mailbox_target_info
        or
        %(held)s  and on (%(exporter)s) ALERTS{alertname="MailboxWidespreadOutage", alertstate="firing"}
        or
        %(held)s  and on (provider) ALERTS{alertname="MailboxProviderOutage", alertstate="firing"}
      ||| % {
        failing: indent(failingLong(selector), '  '),
        perCheck: perCheck,
        perTarget: perTarget,
        exporter: exporter,
        reasons: reasons,
        unless: if unless == '' then '' else indent(unless, '  ') + '\n',
        confirmed: 'mailbox:target_outage',
        held: held,
      },

    // Targets of one exporter failing at all, where enough locations see them failing.
    failingTargets: |||
      (
        max by (%(perTarget)s) (mailbox_probe_consecutive_failures) >= 1
        and on (target)
        (
          mailbox:target_failing_seen
        )
      )
    ||| % { perTarget: perTarget },

    // Targets of one exporter that page: failing long, and confirmed.
    pagingTargets: |||
      (
        max by (%(perTarget)s) (
      %(failing)s
        )
        and on (target)
        (
          mailbox:target_outage
        )
      )
    ||| % {
      perTarget: perTarget,
      failing: indent(failingLong(''), '    '),
    },

    allTargets: 'max by (%s) (mailbox_probe_consecutive_failures)' % perTarget,

    // Template: " from LOCATION" when the alert has a location.
    where: loc('{{ with index $labels "<location>" }} from {{ . }}{{ end }}'),

    // Template: " in phase P with reason R" of the check's latest failure.
    latest(tail=''):: loc(
      '{{- with printf `mailbox_probe_failed_info{job=%q,instance=%q,<location>=%q,target=%q,check=%q}`'
      + ' $labels.job $labels.instance (index $labels "<location>") $labels.target $labels.check | query }}'
      + '{{ with first . }} in phase {{ .Labels.phase }} with reason {{ .Labels.reason }}' + std.rstripChars(tail, '\n')
      + '{{ end }}{{ end }}'
    ),

    // Template: " Failing from A, B." naming every location where the target fails twice or
    // more in a row, when the alerts carry locations.
    seenFrom: loc(
      '{{- with printf `max by (<location>) (mailbox_probe_consecutive_failures{target=%q}) >= 2` $labels.target | query }}'
      + '{{ if index (first .).Labels "<location>" }} Failing from'
      + '{{ range $i, $s := sortByLabel "<location>" . }}{{ if $i }},{{ end }} {{ index $s.Labels "<location>" }}{{ end }}.'
      + '{{ end }}{{ end }}'
      // A page held open by an outage alert (see `page`) while its check works again.
      + '{{ if eq $value 0.0 }} It works again; this page stays open until the outage alert'
      + ' that holds it back resolves.{{ end }}'
    ),
  }
