// Package kuberouter only pins kube-router; the lab builds its cmd/kube-router.
package kuberouter
