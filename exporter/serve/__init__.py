"""What is served over HTTP: metrics, the status page, on-demand probes, web security.

Nothing here imports protocol code: it reads results and state.
"""
