"""Settings stage: the typed ``Settings`` (model), how it is loaded, and its checks.

``load_settings`` reads defaults < ``.env`` < environment < command line and validates once;
``Settings.role(role)`` is the typed view of one server role.
"""

from sglbench.settings.loading import (
    ENV_FILE_VAR,
    KEYS,
    LoadedSettings,
    Source,
    display_value,
    load_settings,
    public_settings,
)
from sglbench.settings.model import RoleSettings, Settings

__all__ = [
    "ENV_FILE_VAR",
    "KEYS",
    "LoadedSettings",
    "RoleSettings",
    "Settings",
    "Source",
    "display_value",
    "load_settings",
    "public_settings",
]
