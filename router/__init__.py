"""Prompt routers: put any prompt into a category of a category mapping.

Importing this package is cheap; the embedding backend imports sentence-transformers (and torch)
only when an embedding router first embeds.
"""

from genedge._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".model": (
            "BACKENDS",
            "LENGTH_BASELINE",
            "PromptRouter",
            "RouterError",
            "cross_validate",
            "default_router",
            "evaluate_backends",
            "labelled_prompts",
            "load_router",
            "router_from_dict",
            "train_router",
        ),
        ".evaluate": (
            "C_GRID",
            "ClassificationReport",
            "NestedCrossValidation",
            "choose_c",
            "nested_cross_validation",
            "plot_confusion",
            "stratified_folds",
        ),
        ".length": ("LENGTH_FEATURES", "LengthFeatures", "prompt_lengths"),
        ".counting": ("PromptCounts", "count_prompts", "require_fit"),
        ".choice": ("choose_router", "count_routed", "router_path"),
        ".files": (
            "ROUTED_SUFFIXES",
            "TrainingData",
            "check_routed_path",
            "evaluation_document",
            "training_data",
            "write_evaluation",
            "write_routed",
        ),
        ".embedding": ("DEFAULT_EMBEDDING_MODEL", "SentenceEncoder"),
        ".logistic": ("LogisticClassifier", "fit_logistic"),
        ".tfidf": ("TfidfFeatures",),
    },
)
