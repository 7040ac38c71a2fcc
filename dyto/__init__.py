"""dyto: training-free video question answering with LLaVA-NeXT and DyTo token merging.

Sub-packages: ``reduction`` (the token path, pure tensors), ``datamodules`` (QA sheets, video
decoding, Lightning DataModules), ``models`` (the LLaVA-NeXT LightningModule, prompts, the tiny
random-weight model), ``evaluation`` (prediction writer, GPT judge, scoring, reports).
"""

__version__ = "0.2.0"
