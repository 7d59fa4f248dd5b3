//go:build tools

// Package argocd only pins ArgoCD; the lab builds its one binary (cmd), whose
// ARGOCD_BINARY_NAME selects the component (server, repo-server, controller, ...).
package argocd

import _ "github.com/argoproj/argo-cd/v3/cmd"
