// Package kube only pins the Kubernetes module; the lab builds its commands.
package kube
