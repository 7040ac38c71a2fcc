"""The tiny TRAINED LLaVA-NeXT: ``checkpoint: tiny-trained`` (the demo's default model).

The same classes as the random tiny model (:mod:`dyto.models.tiny`: CLIP tower, projector,
Llama, byte-level BPE tokenizer), with the sizes and the weights ``scripts/train_tiny.py``
produced on the TRAIN split of the synthetic benchmark (:mod:`dyto.datamodules.synthetic`),
every frame's tokens fed unreduced (``concat``), so no reducer is trained into it. The files
(``model.safetensors``, ``config.json``, tokenizer files, ``TRAINING.md`` with the command and
the measured accuracies) are the package asset ``dyto/assets/tiny_trained/``, loaded with the
real ``from_pretrained`` (:func:`dyto.models.loading.load_checkpoint`).

Its record name carries the first 12 hex digits of the weights' sha256, so the run fingerprint
(and with it every resume check) changes when the weights do.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

TRAINED_NAME = "tiny-trained"
TRAINED_DIR = Path(__file__).resolve().parents[1] / "assets" / "tiny_trained"
WEIGHTS_FILE = "model.safetensors"

__all__ = ["TRAINED_NAME", "TRAINED_DIR", "WEIGHTS_FILE", "weights_sha256", "trained_label"]


def weights_sha256(directory: str | Path = TRAINED_DIR) -> str:
    """sha256 of ``directory/model.safetensors`` (hex)."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the tiny trained model's weights are missing "
                                "(a source checkout without dyto/assets/tiny_trained? scripts/train_tiny.py makes them)")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def trained_label(directory: str | Path = TRAINED_DIR) -> str:
    """The record name: ``tiny-trained (sha256 <12 hex>, synthetic-trained)``."""
    return f"{TRAINED_NAME} (sha256 {weights_sha256(directory)[:12]}, trained on synthetic clips)"
