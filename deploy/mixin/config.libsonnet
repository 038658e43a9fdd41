// What users of the mixin set: override with `mixin + { _config+:: { ... } }`.
{
  _config+:: {
    // The exporter's scrape job: the exporter-level alerts match on it.
    jobSelector: 'job="mailbox-exporter"',

    // The round-trip availability objective over 30 days; see docs/alerting.md before going
    // above 0.99.
    sloObjective: 0.99,

    // How long an alert's condition must hold before it fires, by alert. The probe alerts
    // have none: they need two failed probes in a row instead (docs/alerting.md).
    forDurations: {
      MailboxTLSCertificateExpiringSoon: '10m',
      MailboxProbesStale: '2m',
      MailboxExporterDown: '2m',
      MailboxExporterAbsent: '5m',
      MailboxExporterConfigReloadFailed: '1m',
      MailboxDeliverySlow: '15m',
      MailboxAuthenticationFailing: '10m',
    },

    // How long the outage alerts keep firing (and inhibiting per-target pages) once their
    // condition clears: longer than a round-trip interval plus a scrape and an evaluation.
    keepFiringFor: {
      MailboxWidespreadOutage: '2m',
      MailboxProviderOutage: '2m',
    },

    dashboardRefresh: '1m',
  },
}
