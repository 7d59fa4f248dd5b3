// Package metricsserver only pins metrics-server; the lab builds its cmd/metrics-server.
package metricsserver
