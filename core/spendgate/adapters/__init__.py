"""I/O: the Kubernetes API, files on disk (policy manifests, the keys file, the spend journal) and
the spend report protocol's writes. Everything here is a thin edge around spendgate.logic and
spendgate.policy, which stay pure."""
