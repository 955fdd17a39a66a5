"""The registered spaces as the application sees them: the shipped families loaded first."""

from __future__ import annotations

from pathlib import Path

from nas.errors import ConfigError
from nas.registry import Registry
from nas.supernet import SpaceEntry


def registry() -> Registry:
    """`nas.supernet.SPACES` with the shipped families registered (imports diffusers)."""
    import search_spaces  # noqa: F401  (registers the shipped spaces)
    from nas.supernet import SPACES

    return SPACES


def space_entry(name: str) -> SpaceEntry:
    """The registered space `name` (a `RegistryError` lists the known ones)."""
    return registry().get(name)


def resolve_space(arg: str) -> SpaceEntry:
    """A registered space entry from a space name or an experiment YAML's `space` key."""
    spaces = registry()
    if not arg.endswith((".yaml", ".yml")):
        return spaces.get(arg)
    import yaml

    path = Path(arg)
    if not path.is_file():
        raise ConfigError(f"experiment file {arg} does not exist")
    doc = yaml.safe_load(path.read_text()) or {}
    name = doc.get("space")
    name = name.get("name") if isinstance(name, dict) else name
    if not isinstance(name, str):
        raise ConfigError(
            f"{arg}: key 'space' must name a registered space; known: {spaces.names()}"
        )
    return spaces.get(name)
