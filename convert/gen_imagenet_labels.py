"""Dev script: write `libra_jax/assets/imagenet1k_labels.tsv` from the ImageNet info files timm ships.

    python convert/gen_imagenet_labels.py [-o libra_jax/assets/imagenet1k_labels.tsv]

One line per ImageNet-1k class, in class-index order: the WordNet synset id, a tab, its lemmas
("n01440764<TAB>tench, Tinca tinca"), read from timm's `data/_info/imagenet_synsets.txt` and
`imagenet_synset_to_lemma.txt`. Needs timm; the runtime reading the file does not.
"""

from __future__ import annotations

import argparse
import pathlib


def main() -> None:
    import timm.data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    out = pathlib.Path(__file__).resolve().parents[1] / "libra_jax" / "assets" / "imagenet1k_labels.tsv"
    parser.add_argument("-o", "--out", type=pathlib.Path, default=out)
    args = parser.parse_args()
    info = pathlib.Path(timm.data.__file__).parent / "_info"
    synsets = (info / "imagenet_synsets.txt").read_text().split()
    lemmas = dict(line.split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines())
    if len(synsets) != 1000 or len(set(synsets)) != 1000:
        raise SystemExit(f"expected 1000 distinct synsets in {info / 'imagenet_synsets.txt'}; got {len(synsets)}")
    args.out.write_text("".join(f"{s}\t{lemmas[s].strip()}\n" for s in synsets), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
