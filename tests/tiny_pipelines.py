"""Tiny real diffusers pipelines on disk, as a local folder and as an offline Hugging Face cache.

The replicas ``tiny`` and ``tiny-xl`` (a few hundred kB of random weights) are saved with
``save_pretrained``, so every local-folder and hub-id code path runs against real diffusers files
in well under a second per load.

Typical use (``tests/`` is on ``sys.path`` under pytest's default import mode), with the session fixture
``tiny_folder`` of ``conftest.py`` (``save_tiny_pipeline`` once per run)::

    from tiny_pipelines import lay_out_hub_cache, use_hub_cache

    def test_hub(tiny_folder, tmp_path, monkeypatch):
        lay_out_hub_cache(tiny_folder, tmp_path / "hub", "genedge-test/tiny")
        use_hub_cache(monkeypatch, tmp_path / "hub")  # offline, reading only this cache
        load_pipeline("genedge-test/tiny", device=torch.device("cpu"), dtype=torch.float32)

A test that runs ``genedge`` in a subprocess passes ``hub_cache_env(cache_dir)`` as extra
environment instead of calling :func:`use_hub_cache`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

__all__ = ["TINY_COMMIT", "hub_cache_env", "lay_out_hub_cache", "save_tiny_pipeline", "use_hub_cache"]

# Any 40-hex string serves as a commit: nothing checks it against file contents.
TINY_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def save_tiny_pipeline(folder: str | Path, *, xl: bool = False) -> Path:
    """Save the ``tiny`` (or ``tiny-xl``) replica as a diffusers pipeline folder.

    The folder holds ``model_index.json`` and ``unet/``, ``vae/``, ``text_encoder/``,
    ``tokenizer/``, ``scheduler/`` (plus ``text_encoder_2/`` and ``tokenizer_2/`` for SDXL), with
    weights in safetensors, exactly as ``save_pretrained`` writes them. The SD pipeline has no
    safety checker (``model_index.json`` records ``requires_safety_checker: false``). Its native
    resolution from the configs is 16 (UNet ``sample_size`` 8 × VAE factor 2), not the
    replica's nominal 64.

    Args:
        folder: Where to write: a new or empty folder (:func:`genedge.profiler.models.save_replica`).
        xl: Save ``tiny-xl`` (a ``StableDiffusionXLPipeline``) instead of ``tiny``.

    Returns:
        ``folder`` as a ``Path``.
    """
    from genedge.profiler.models import save_replica

    return save_replica("tiny-xl" if xl else "tiny", folder)


def lay_out_hub_cache(
    folder: str | Path,
    cache_dir: str | Path,
    repo_id: str,
    *,
    commit: str = TINY_COMMIT,
    branch: str = "main",
) -> Path:
    """Copy a pipeline folder into a Hugging Face hub cache, as ``hf download`` would have left it.

    Writes ``cache_dir/models--<org>--<name>/`` with ``blobs/<sha256>`` (the file contents),
    ``snapshots/<commit>/...`` (relative symlinks to the blobs; copies where symlinks are not
    allowed) and ``refs/<branch>`` (the commit). No tree listing (``trees/``) is written, so
    huggingface_hub trusts the snapshot folder as complete. Calling it again with another commit
    or branch adds that snapshot or ref to the same repository.

    Args:
        folder: A diffusers pipeline folder, e.g. from :func:`save_tiny_pipeline`.
        cache_dir: The hub cache root (what ``HF_HUB_CACHE`` points to).
        repo_id: ``org/name``.
        commit: The 40-hex commit the snapshot is filed under.
        branch: The ref that points to ``commit``.

    Returns:
        The snapshot folder ``cache_dir/models--org--name/snapshots/<commit>``.
    """
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for file in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            shutil.copyfile(file, blob)
        target = snapshot / file.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to(os.path.relpath(blob, target.parent))
        except OSError:
            shutil.copyfile(blob, target)
    ref = repo / "refs" / branch
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit, encoding="utf-8")
    return snapshot


def hub_cache_env(cache_dir: str | Path) -> dict[str, str]:
    """Environment variables that make a new process read hub models only from ``cache_dir``, offline."""
    return {"HF_HUB_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}


def use_hub_cache(monkeypatch: pytest.MonkeyPatch, cache_dir: str | Path) -> None:
    """Make this process read hub models only from ``cache_dir``, offline, for one test.

    huggingface_hub reads ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` into ``huggingface_hub.constants``
    when it is first imported, so setting the environment alone changes nothing in a running
    process; this patches both the environment (for subprocesses) and those constants.
    """
    import huggingface_hub.constants

    for name, value in hub_cache_env(cache_dir).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
