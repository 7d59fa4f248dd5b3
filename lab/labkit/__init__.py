"""The manifest lab: a registry, a Docker engine and a one-node Kubernetes
cluster built on this machine from upstream sources (stdlib only)."""
