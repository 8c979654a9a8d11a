"""Derive the CLIP tokenizer files SD 1.x uses (`vocab.json`, `merges.txt`) from the BPE table
that ships inside the open-clip-torch wheel (`open_clip/bpe_simple_vocab_16e6.txt.gz`, MIT).

    python -m sdtui.devtools.clip_vocab OUTDIR

The result is the vocabulary of openai/clip-vit-large-patch14: 256 byte tokens, the same 256
with the end-of-word marker, 48,894 merges and the two specials — 49,408 tokens in all. Its
output is committed under `sdtui/assets/sd1/tokenizer/`, so nothing here runs at load time.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
from pathlib import Path

# The same cut open_clip's SimpleTokenizer makes: the first line is a header, the rest up to
# this count are the merges the 49,408-token vocabulary was trained with.
MERGE_COUNT = 49152 - 256 - 2
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
MERGES_HEADER = "#version: 0.2"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map of every byte onto a printable unicode character."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def open_clip_bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise SystemExit("open-clip-torch is not installed — pip install open-clip-torch")
    return Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"


def derive(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    """Return (token -> id, merge lines) exactly as CLIP's tokenizer builds them."""
    lines = gzip.decompress(bpe_gz.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : MERGE_COUNT + 1]
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += list(SPECIAL_TOKENS)
    return {token: index for index, token in enumerate(tokens)}, merges


def write(out_dir: Path, bpe_gz: Path | None = None) -> None:
    vocab, merges = derive(bpe_gz or open_clip_bpe_path())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text(
        "\n".join([MERGES_HEADER, *merges]) + "\n", encoding="utf-8"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    args = parser.parse_args(argv)
    write(args.outdir)
    print(f"wrote {args.outdir}/vocab.json and merges.txt")


if __name__ == "__main__":
    main()
