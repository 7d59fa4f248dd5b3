"""manifest's tasks. This file only assembles the namespaces; the work is in ``ops``."""

from invoke.collection import Collection

from ops.tasks import backup, config, deploy, doctor, image, pipeline, rollout
from ops.tasks import secrets as secrets_tasks

ns = Collection()
ns.add_task(config.show, name="config")
ns.add_task(doctor.doctor, name="doctor")
ns.add_task(deploy.deploy, name="deploy")
ns.add_task(pipeline.pipeline, name="pipeline")
ns.add_collection(image.ns)
ns.add_collection(rollout.ns)
ns.add_collection(secrets_tasks.ns)
ns.add_collection(backup.ns)
