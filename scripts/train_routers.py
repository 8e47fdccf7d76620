"""Train genedge's shipped prompt routers on PartiPrompts.

Data source: PartiPrompts (Yu et al., 2022, arXiv:2206.10789), ``PartiPrompts.tsv`` at the root of
https://github.com/google-research/parti (Apache-2.0), commit 5a657978134374ce28973948331b319adef164bd,
sha256 fab29e41bb512a169b56acab4cf2a41dcb675e285df2efcde6640c7dd3c440eb. The prompts are not copied
into genedge: the routers keep only fitted numbers (vocabulary, idf, the length features'
standardization, weights) and the nested cross-validation's confusion matrix.

Writes, under the paper's four categories (mapping ``paper4``, PartiPrompts' Challenge column):

- ``data/routers/paper4-tfidf.json``: TF-IDF + prompt length + logistic regression (numpy and scipy only);
- ``data/routers/paper4-minilm.json``: all-MiniLM-L6-v2 sentence embeddings + prompt length + logistic
  regression (needs ``pip install "genedge[router]"``).

Each router's C is chosen among ``genedge.router.C_GRID`` by nested 5-fold cross-validation; the figures
printed are the outer folds'.

Usage:
    python scripts/train_routers.py PATH/TO/PartiPrompts.tsv [--out-dir data/routers]

Training is deterministic: the same file gives the same numbers.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from genedge.contract.mappings import get_category_mapping
from genedge.contract.prompts import read_prompt_file
from genedge.router.model import labelled_prompts, train_router

ROOT = Path(__file__).resolve().parent.parent
PARTIPROMPTS_SHA256 = "fab29e41bb512a169b56acab4cf2a41dcb675e285df2efcde6640c7dd3c440eb"
SOURCE = {
    "file": "PartiPrompts.tsv",
    "repository": "https://github.com/google-research/parti",
    "commit": "5a657978134374ce28973948331b319adef164bd",
    "license": "Apache-2.0",
    "sha256": PARTIPROMPTS_SHA256,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("partiprompts", type=Path, help="PartiPrompts.tsv")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "data" / "routers", help="where to write the routers")
    args = parser.parse_args()
    digest = hashlib.sha256(args.partiprompts.read_bytes()).hexdigest()
    if digest != PARTIPROMPTS_SHA256:
        raise SystemExit(f"{args.partiprompts}: sha256 {digest}, expected {PARTIPROMPTS_SHA256} (PartiPrompts.tsv)")
    mapping = get_category_mapping("paper4")
    table = read_prompt_file(args.partiprompts)
    prompts, categories = labelled_prompts(table, mapping)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for backend in ("tfidf", "embedding"):
        router = train_router(prompts, categories, mapping, backend, source={**SOURCE, "rows": len(table.rows)})
        path = router.save(args.out_dir / f"{router.name}.json")
        cv = router.cross_validation
        print(
            f"{path}: {len(prompts)} prompts, nested CV accuracy {cv.accuracy:.3f}, macro-F1 {cv.macro_f1:.3f}; "
            f"C {router.training['c']:g} (per outer fold {', '.join(f'{c:g}' for c in router.training['c_per_fold'])})"
        )


if __name__ == "__main__":
    main()
