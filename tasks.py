"""manifest's tasks. This file only assembles the namespaces; the work is in ``ops``."""

from invoke.collection import Collection

from ops.tasks import config

ns = Collection()
ns.add_task(config.show, name="config")
