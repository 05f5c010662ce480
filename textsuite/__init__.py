"""The composition root: the `textsuite` CLI and the HTTP service that mounts every app.

It is the only place that imports core, apps and workers together.
"""
