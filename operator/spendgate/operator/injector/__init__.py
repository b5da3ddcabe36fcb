"""Sidecar injection: a mutating admission webhook that adds the gateway to opted-in pods.

Pure logic apart from I/O, as in the rest of the project:
- `settings` (the sidecar's settings, validated) and `sidecar` (the proxy container it renders,
  the only place the sidecar's proxy flags are written), `patch` (pod in, JSON patch out),
  `review` (AdmissionReview in, AdmissionReview out) and `certificates` (what to issue, when to
  renew) are pure;
- `rotation` keeps the serving certificate and the webhook's CA bundle current through the API,
  `server` is the thin HTTPS server, and `main` is `spendgate injector`.
docs/injection.md says how it is wired and why it runs as its own Deployment.
"""
