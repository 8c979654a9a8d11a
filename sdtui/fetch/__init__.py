"""Fetching models by name: Hugging Face, Civitai and a short catalogue.

refs (what the user typed) -> catalogue / hf / civitai (what it resolves to: a Resolved set of
remote files with their checksums) -> download (staged, resumed, verified, moved into the
store). Where the store's files then go (a Docker volume, a bucket) is each option's business.
"""
