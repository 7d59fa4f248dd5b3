"""Settings: one typed, frozen object built once per task run.

Precedence, lowest first: defaults < files in ``secrets/`` (credentials only) < ``.env``
< environment (``MANIFEST_*``) < task flags. Every value remembers where it came from, so
``inv config`` can say why a surprising value is what it is.
"""

from __future__ import annotations

import io
import os
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ops import textfiles
from ops.errors import ConfigError

Source = Literal["default", "secrets/", ".env", "environment", "flag"]
BackupFormat = Literal["custom", "plain"]

ENV_PREFIX = "MANIFEST_"
ENV_FILE_VARIABLE = "MANIFEST_ENV_FILE"
MASK = "********"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
_REPOSITORY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")


def _setting(default: Any, help: str, *, secret: bool = False, secret_file: str = "") -> Any:
    return field(
        default=default,
        metadata={"help": help, "secret": secret, "secret_file": secret_file},
    )


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The effective configuration of one task run."""

    # Image
    registry: str = _setting("localhost:30002", "Registry host[:port] the image is pushed to")
    image_repository: str = _setting("studenten/manifest-app", "Repository inside the registry")
    registry_username: str = _setting("", "Registry user", secret_file="registry_username.txt")
    registry_password: str = _setting(
        "", "Registry password", secret=True, secret_file="registry_password.txt"
    )
    registry_ca_file: Path | None = _setting(None, "CA bundle for a registry with its own CA")
    build_context: Path = _setting(Path("app"), "Folder sent to the engine as build context")
    dockerfile: str = _setting("Dockerfile", "Dockerfile, relative to the build context")
    base_image: str = _setting("", "BASE_IMAGE build argument (empty: the Dockerfile's default)")
    # Cluster
    kubeconfig: Path | None = _setting(
        None, "Kubeconfig file (empty: KUBECONFIG or ~/.kube/config)"
    )
    context: str = _setting("", "Kube context (empty: the kubeconfig's current context)")
    allowed_contexts: tuple[str, ...] = _setting(
        ("docker-desktop", "manifest-lab"),
        "Contexts usable without naming them with --context (comma-separated)",
    )
    namespace: str = _setting("development", "Namespace of the app and its database")
    deployment: str = _setting("manifest-app", "The app's Deployment")
    rollout_timeout: float = _setting(300.0, "Seconds to wait for a rollout to complete")
    overlay: str = _setting(
        "development", "Overlay `inv deploy` applies: development, staging, production or test"
    )
    manifests_dir: Path = _setting(
        Path("k8s/rendered"), "Folder of the rendered overlays (<overlay>.yaml)"
    )
    # Database and backups
    postgres_pod: str = _setting("postgres-0", "Pod running PostgreSQL")
    database: str = _setting("studentdb", "Database to back up and restore")
    backup_daemon: str = _setting("postgres-backup", "Deployment of the backup daemon")
    backups_dir: Path = _setting(Path("backups"), "Local folder for backups")
    backup_keep: int = _setting(10, "Local backups kept (newest first)")
    backup_format: BackupFormat = _setting("custom", "Dump format: custom or plain")
    backup_compression: int = _setting(
        1,
        "pg_dump -Fc compression level 0-9 (1: fastest on every link measured, see README)",
    )
    backup_recipients: tuple[str, ...] = _setting(
        (),
        "Public age keys backups are encrypted to (comma-separated; encryption is on when set)",
        secret_file="backup_recipients.txt",
    )
    backup_identity_file: Path | None = _setting(
        None,
        "Private age key that opens encrypted backups (empty: secrets/backup_identity.txt)",
    )
    secrets_dir: Path = _setting(Path("secrets"), "Local folder of secret files")

    sources: Mapping[str, Source] = field(default_factory=dict, compare=False, repr=False)

    @property
    def image(self) -> str:
        """The image reference without a tag, e.g. ``localhost:30002/studenten/manifest-app``."""
        return f"{self.registry}/{self.image_repository}"

    def source_of(self, name: str) -> Source:
        return self.sources.get(name, "default")


@dataclass(frozen=True, kw_only=True)
class SettingInfo:
    """One row of ``inv config``: a setting, its shown value and where it came from."""

    name: str
    value: str
    source: Source
    env_var: str
    help: str


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def setting_names() -> list[str]:
    return [f.name for f in fields(Settings) if f.name != "sources"]


def is_secret(name: str) -> bool:
    """Whether the setting holds a secret: its value is masked wherever it is shown."""
    return any(f.name == name and bool(f.metadata.get("secret")) for f in fields(Settings))


def load_settings(
    overrides: Mapping[str, object | None] | None = None,
    *,
    env_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings from every source; ``overrides`` are task flags (None = not given).

    ``flag_names``: the task flag of a setting where it is not ``--<setting-name>``
    (``backup_keep`` is ``--keep``), so an error names a flag the user can type.
    """
    environ = os.environ if environ is None else environ
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(flags) - set(setting_names())
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")

    dotenv = _read_env_file(env_file, environ)
    layers: list[tuple[Source, Mapping[str, object]]] = [
        (".env", _prefixed(dotenv)),
        ("environment", _prefixed(environ)),
        ("flag", flags),
    ]
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    hints = get_type_hints(Settings)
    for layer_source, layer in layers:
        for name, raw in layer.items():
            values[name] = _convert(name, raw, hints[name], layer_source, flag_names)
            sources[name] = layer_source

    secrets_dir = Path(str(values.get("secrets_dir", Settings.secrets_dir)))
    for f in fields(Settings):
        secret_file = f.metadata.get("secret_file")
        if secret_file and f.name not in values:
            # A list (backup_recipients) is a whole file, one item per line; others one value.
            listed = hints[f.name] == tuple[str, ...]
            value = _read_secret_file(secrets_dir / secret_file, whole=listed)
            if value is not None:
                values[f.name] = (
                    _convert(f.name, value, hints[f.name], "secrets/", flag_names)
                    if listed
                    else value
                )
                sources[f.name] = "secrets/"

    settings = Settings(**values, sources=sources)
    _validate(settings, flag_names)
    return settings


def describe(settings: Settings) -> list[SettingInfo]:
    """Every setting with its value (secrets masked) and its source, for ``inv config``."""
    rows = []
    for f in fields(Settings):
        if f.name == "sources":
            continue
        value = getattr(settings, f.name)
        shown = _show(value)
        if f.metadata.get("secret") and value:
            shown = MASK
        rows.append(
            SettingInfo(
                name=f.name,
                value=shown,
                source=settings.source_of(f.name),
                env_var=env_var(f.name),
                help=str(f.metadata.get("help", "")),
            )
        )
    return rows


def _show(value: object) -> str:
    if value is None or value == "":
        return "(not set)"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _prefixed(mapping: Mapping[str, str | None]) -> dict[str, object]:
    names = set(setting_names())
    found: dict[str, object] = {}
    for key, value in mapping.items():
        if key.startswith(ENV_PREFIX) and value is not None:
            name = key[len(ENV_PREFIX) :].lower()
            if name in names:
                found[name] = value
    return found


def _read_env_file(
    env_file: Path | str | None, environ: Mapping[str, str]
) -> dict[str, str | None]:
    from dotenv import dotenv_values

    explicit = env_file is not None or ENV_FILE_VARIABLE in environ
    path = Path(env_file if env_file is not None else environ.get(ENV_FILE_VARIABLE, ".env"))
    if not path.is_file():
        if explicit:
            raise ConfigError(
                f"settings file {path} does not exist",
                hint=f"Create it, or unset {ENV_FILE_VARIABLE} to use ./.env.",
            )
        return {}
    # python-dotenv parses; the text comes from our reader, so a BOM or UTF-16 file gives
    # the same values as a UTF-8 one (dotenv alone would put a BOM into the first key).
    return dict(dotenv_values(stream=io.StringIO(textfiles.read_text(path))))


def _read_secret_file(path: Path, *, whole: bool = False) -> str | None:
    try:
        return textfiles.read_text(path) if whole else textfiles.read_value(path)
    except FileNotFoundError:
        return None


def _convert(
    name: str, raw: object, hint: Any, source: Source, flag_names: Mapping[str, str] | None
) -> object:
    """Turn a raw value (a string from .env or the environment) into the field's type."""
    optional = False
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if not isinstance(raw, str):
        return tuple(raw) if hint == tuple[str, ...] and isinstance(raw, list | tuple) else raw
    text = raw.strip()
    if optional and text == "":
        return None
    converters: dict[Any, Callable[[str], object]] = {
        str: lambda s: s,
        Path: Path,
        int: int,
        float: float,
        # Commas or lines; a line starting with # is a comment (as in age's recipients files).
        tuple[str, ...]: lambda s: tuple(
            p.strip()
            for line in s.splitlines()
            if not line.lstrip().startswith("#")
            for p in line.split(",")
            if p.strip()
        ),
    }
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        if text not in choices:
            raise _invalid(name, raw, source, f"one of: {', '.join(choices)}", flag_names)
        return text
    try:
        return converters[hint](text)
    except ValueError as exc:
        expected = {int: "a whole number", float: "a number"}.get(hint, str(hint))
        raise _invalid(name, raw, source, expected, flag_names) from exc


def _invalid(
    name: str,
    raw: object,
    source: Source,
    expected: str,
    flag_names: Mapping[str, str] | None = None,
) -> ConfigError:
    shown = MASK if is_secret(name) else repr(raw)
    where = {
        "flag": (flag_names or {}).get(name, f"--{name.replace('_', '-')}"),
        "environment": f"environment variable {env_var(name)}",
        ".env": f"{env_var(name)} in .env",
        "secrets/": "a file in secrets/",
        "default": "the default",
    }[source]
    return ConfigError(
        f"setting {name} = {shown} (from {where}) is invalid: expected {expected}",
        hint=f"Fix {where}.",
        setting=name,
        source=source,
    )


def _validate(s: Settings, flag_names: Mapping[str, str] | None = None) -> None:
    checks: list[tuple[str, bool, str]] = [
        ("registry", bool(_REGISTRY.match(s.registry)), "host[:port], e.g. localhost:30002"),
        (
            "image_repository",
            bool(_REPOSITORY.match(s.image_repository)),
            "a lowercase repository path such as studenten/manifest-app",
        ),
        ("namespace", bool(_DNS_LABEL.match(s.namespace)), "a DNS label such as development"),
        ("deployment", bool(_DNS_SUBDOMAIN.match(s.deployment)), "a Kubernetes object name"),
        ("overlay", bool(_DNS_LABEL.match(s.overlay)), "an overlay name such as development"),
        ("postgres_pod", bool(_DNS_SUBDOMAIN.match(s.postgres_pod)), "a pod name"),
        ("backup_daemon", bool(_DNS_SUBDOMAIN.match(s.backup_daemon)), "a Deployment name"),
        (
            "database",
            bool(re.match(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$", s.database)),
            "a database name",
        ),
        ("rollout_timeout", s.rollout_timeout > 0, "a number of seconds above 0"),
        ("backup_keep", s.backup_keep >= 1, "a whole number of at least 1"),
        ("backup_compression", 0 <= s.backup_compression <= 9, "a whole number from 0 to 9"),
        ("allowed_contexts", all(c for c in s.allowed_contexts), "comma-separated context names"),
    ]
    for name, ok, expected in checks:
        if not ok:
            raise _invalid(name, getattr(s, name), s.source_of(name), expected, flag_names)
    if s.registry_ca_file is not None and not s.registry_ca_file.is_file():
        raise ConfigError(
            f"setting registry_ca_file = {s.registry_ca_file} "
            f"(from {s.source_of('registry_ca_file')}) does not exist",
            hint="Point it at the registry's CA certificate, or leave it empty.",
            setting="registry_ca_file",
        )
