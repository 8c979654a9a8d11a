"""A settings dataclass whose first model may be a name to fetch (every option's settings)."""

from __future__ import annotations

from sdtui.errors import BadInput
from sdtui.fetch.plan import Resolved, beside
from sdtui.fetch.refs import is_remote


class ModelByName:
    models: list
    lora_files: list = []  # LoRAs to fetch into the loras/ folder beside the model

    def names_a_fetch(self, text: str) -> bool:
        """Whether `text` (the first --model) is a reference to fetch rather than a file."""
        return is_remote(text)

    def fetched_model(self) -> Resolved | None:
        """The model named to fetch, resolved once (over the network), or None for a file."""
        if not self.models or not self.names_a_fetch(str(self.models[0])):
            return None
        resolved = getattr(self, "_resolved", None)
        if resolved is None or resolved.ref != str(self.models[0]):
            from sdtui.fetch.resolve import resolve

            resolved = self._resolved = resolve(str(self.models[0]))
        return resolved

    def fetched_loras(self) -> list[Resolved]:
        """The LoRAs named to fetch, resolved once (over the network)."""
        cached = getattr(self, "_loras", None)
        if cached is None or [r.ref for r in cached] != [str(x) for x in self.lora_files]:
            from sdtui.fetch.resolve import resolve_lora

            cached = self._loras = [resolve_lora(str(x)) for x in self.lora_files]
        return cached

    def bucket_sets(self) -> list[Resolved]:
        """What a cloud option fetches into the bucket: the model, then each LoRA in the
        `loras/` folder beside it (where the worker finds it)."""
        model = self.fetched_model()
        return [model, *(beside(lora, model) for lora in self.fetched_loras())] if model else []

    def check_lora_files(self, option: str) -> None:
        """In the bucket, a LoRA goes beside a model fetched into it: refused otherwise."""
        if self.lora_files and self.fetched_model() is None:
            raise BadInput("--lora-file fetches into the loras/ folder beside a model named to "
                           f"fetch on {option}",
                           fix="name the model to fetch (hf:, civitai:, a catalogue name), or "
                           "put the LoRA in a loras/ folder beside the model file (uploaded "
                           "with it)")
        self.fetched_loras()

    def to_fetch(self) -> list[Resolved]:
        """Every set named to fetch: the model's, then each LoRA's."""
        model = self.fetched_model()
        return [model, *self.fetched_loras()] if model else self.fetched_loras()
