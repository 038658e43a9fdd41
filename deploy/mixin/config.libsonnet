// What users of the mixin set: override with `mixin + { _config+:: { ... } }`.
{
  _config+:: {
    // The exporter's scrape job: the exporter-level alerts match on it.
    jobSelector: 'job="mailbox-exporter"',

    // The label that names where an exporter probes from (office, a data centre, a cloud
    // region): a target label added at scrape time, or an external label
    // (docs/alerting.md#locations). Without it, all exporters are one location. The overview
    // dashboard repeats a row for each of its values.
    locationLabel: 'location',

    // How many locations must see a target failing for an outage (capped at the number of
    // locations that watch it): fewer is the failing locations' own path to it.
    outageLocations: 2,

    // A check pages once its failed probes in a row span this many seconds (from the end of
    // the first to the end of the latest): a provider blip or a throttled minute of up to two
    // minutes never pages (docs/alerting.md#time-to-page).
    failingForSeconds: 150,

    // The reasons of a location's own network: every target of one location failing with
    // these, while another location sees them working, is that exporter's network.
    networkReasons: ['dns', 'connect_refused', 'network', 'timeout', 'tls'],

    // After a probe page of a target, its burn-rate pages stay quiet this long: the budget
    // spent by that outage is already paged. Longer than the 30m short window of the slower
    // paging pair.
    burnQuietAfterPage: '40m',

    // The round-trip availability objective over 30 days; see docs/alerting.md before going
    // above 0.99.
    sloObjective: 0.99,

    // How long an alert's condition must hold before it fires, by alert. The probe alerts
    // have none: they need two failed probes in a row instead (docs/alerting.md).
    forDurations: {
      MailboxTLSCertificateExpiringSoon: '10m',
      MailboxCredentialExpiringSoon: '10m',
      MailboxProbesStale: '2m',
      MailboxExporterDown: '2m',
      MailboxExporterAbsent: '5m',
      MailboxExporterConfigReloadFailed: '1m',
      MailboxDeliverySlow: '15m',
      MailboxAuthenticationFailing: '10m',
      // Longer than a round-trip interval: while an outage reaches the second location, the
      // first one's failure looks like its own path for up to one interval.
      MailboxLocationPathFailing: '2m',
      // Longer than the time from a young exporter's second failed round trip to the probe
      // page (failingForSeconds), which then quiets it.
      MailboxErrorBudgetBurn: '5m',
    },

    // How long the outage alerts keep firing (and inhibiting per-target pages) once their
    // condition clears: longer than a round-trip interval plus a scrape and an evaluation.
    keepFiringFor: {
      MailboxWidespreadOutage: '2m',
      MailboxProviderOutage: '2m',
      MailboxLocationNetworkDown: '2m',
    },

    dashboardRefresh: '1m',
  },
}
