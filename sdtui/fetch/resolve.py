"""A --model value to what it names: a local path stays a path; a reference is resolved (over
the network, before anything is created) to the exact files of one model set."""

from __future__ import annotations

from dataclasses import replace

from sdtui.errors import BadInput
from sdtui.fetch.catalogue import Entry, SplitSet, entry
from sdtui.fetch.civitai import resolve_civitai
from sdtui.fetch.hf import repo_files, resolve_hf, resolve_hf_lora
from sdtui.fetch.plan import RemoteFile, Resolved
from sdtui.fetch.refs import CatalogueRef, CivitaiRef, HfRef, parse_ref


def resolve(text: str) -> Resolved:
    ref = parse_ref(text)
    if isinstance(ref, CatalogueRef):
        e = entry(ref.name)
        if isinstance(e.source, SplitSet):
            return _split_set(text, e, e.source, ref.revisions)
        (revision,) = _revisions(text, (e.source.repo,), ref.revisions)
        resolved = resolve_hf(replace(e.source, revision=revision))
        return replace(resolved, ref=text, source=f"{e.name} = {resolved.source}")
    if isinstance(ref, HfRef):
        return resolve_hf(ref)
    if isinstance(ref, CivitaiRef):
        return resolve_civitai(ref)
    raise BadInput(f"{text} is a local path, not a name to fetch", fix="check the path")


def _revisions(text: str, repos: tuple[str, ...],
               given: tuple[str, ...] | None) -> tuple[str | None, ...]:
    if given is None:
        return (None,) * len(repos)
    if len(given) != len(repos):
        plural = "s" if len(repos) > 1 else ""
        raise BadInput(f"{text}: its entry's files come from {len(repos)} repo{plural} "
                       f"({', '.join(repos)}), one commit each; {len(given)} given",
                       fix="give one commit per repo, joined by +, or the name alone")
    return given


def _split_set(text: str, e: Entry, split: SplitSet,
               revisions: tuple[str, ...] | None) -> Resolved:
    """One folder of files from several repos, each pinned to the commit it resolved to."""
    commits: list[str] = []
    files: list[RemoteFile] = []
    for repo, revision in zip(split.repos, _revisions(text, split.repos, revisions),
                              strict=True):
        commit, found = repo_files(repo, revision,
                                   {p.path: p.dest for p in split.parts if p.repo == repo})
        commits.append(commit)
        files += found
    pinned = f"{e.name}@{'+'.join(commits)}"
    source = f"{e.name} = " + " + ".join(f"hf:{r}@{c}" for r, c in zip(split.repos, commits,
                                                                        strict=True))
    by_dest = {f.dest: f for f in files}
    ordered = tuple(by_dest[p.dest] for p in split.parts)  # the transformer first
    root = f"catalogue/{e.name.replace(':', '-')}/{'+'.join(c[:12] for c in commits)}"
    return Resolved(text, source, pinned, root, split.parts[0].dest, ordered)


def resolve_lora(text: str) -> Resolved:
    """A LoRA to fetch into the `loras/` folder beside the model (`--lora-file`)."""
    ref = parse_ref(text)
    if isinstance(ref, HfRef):
        return resolve_hf_lora(ref)
    if isinstance(ref, CivitaiRef):
        return resolve_civitai(ref, lora=True)
    raise BadInput(f"--lora-file {text}: give hf:ORG/REPO/FILE.safetensors or civitai:ID",
                   fix="a LoRA you already have goes in the loras/ folder beside the model")
