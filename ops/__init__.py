"""manifest's operations library: config, images, rollout, secrets, exec streaming, backups.

Usable without Invoke; heavy packages (docker, kubernetes) are imported inside the functions
that need them so that ``inv --list`` stays fast.
"""
