// Package traefik only pins Traefik; the lab builds its cmd/traefik.
package traefik
