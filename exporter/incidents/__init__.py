"""Provider status: the incidents and advisories hosted mail providers publish about their own
services, read on a schedule of their own and kept beside the probes' results.

:mod:`.model` holds the value types (read by the store, ``/metrics`` and the status page);
:mod:`.sources` reads Microsoft 365 Service Health over Microsoft Graph and the Google
Workspace Status Dashboard's feed; :mod:`.collector` runs one task per provider.
"""
