"""A settings dataclass whose first model may be a name to fetch (both options' settings)."""

from __future__ import annotations

from sdtui.fetch.plan import Resolved
from sdtui.fetch.refs import is_remote


class ModelByName:
    models: list

    def fetched_model(self) -> Resolved | None:
        """The model named to fetch, resolved once (over the network), or None for a file."""
        if not self.models or not is_remote(self.models[0]):
            return None
        resolved = getattr(self, "_resolved", None)
        if resolved is None or resolved.ref != str(self.models[0]):
            from sdtui.fetch.resolve import resolve

            resolved = self._resolved = resolve(str(self.models[0]))
        return resolved
