"""Left padding in generation pools, questions in input order against ``data.order: length``, on
the published QA sheets shipped in ``tests/fixtures/qa-full``: the share of the rows a batched
prefill computes (and the KV cache holds) that are padding.

A pool is ``--pool`` consecutive questions of one rank's shard, dealt as ``VideoQADataModule``
deals them; it is generated as one group (what ``generation_batch_size: auto`` forms at 7B on an
H200 for a pool of 16) or in length-aware groups of ``--group``. A prompt's length is its text
tokens plus ``--visual`` visual tokens (DyTo's 3680 at 24x24 by default; every reducer in the
zoo gives a fixed count at a fixed budget). Text tokens: the backbone's own prompt for the
record, tokenised by its tokenizer. The tiny in-memory tokenizers (BPE, 400 symbols) split
English into roughly twice as many tokens as a real one, so the text shares printed here are
upper bounds; the ordering effect is what to read.

    python benchmarks/bench_padding.py                               # every sheet, pool 16, 3680 visual
    python benchmarks/bench_padding.py --visual 0 --group 4          # text only, groups of 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from dyto.datamodules.base import length_order
from dyto.datamodules.prepare import prepare
from dyto.models.backbone import build_backbone, list_backbones
from dyto.models.batching import length_groups, padding_tokens
from dyto.records import read_qa_records

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the shipped sheets and their unpacker
from qa_sheets import SHEETS, unpack_full_sheet  # noqa: E402


def pool_padding(lengths: list[int], order: list[int], pool: int, group: int | None) -> int:
    """Padding tokens over the pools cut from ``order``, each cut into length-aware groups."""
    total = 0
    for start in range(0, len(order), pool):
        members = [lengths[i] for i in order[start : start + pool]]
        total += padding_tokens(members, length_groups(members, group, "length"))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=list_backbones(), default="llava_next")
    parser.add_argument("--pool", type=int, default=16, help="questions per DataModule batch")
    parser.add_argument("--group", type=int, default=None, help="generation group size (default: the whole pool)")
    parser.add_argument("--visual", type=int, default=3680, help="visual tokens per question")
    parser.add_argument("--benchmarks", nargs="*", default=list(SHEETS))
    args = parser.parse_args()
    backbone = build_backbone(args.backbone)
    print(f"prompts: {args.backbone} (tiny tokenizer); pool {args.pool}; "
          f"groups {args.group or 'of the whole pool'}; {args.visual} visual tokens a question")
    print(f"{'benchmark':<16}{'questions':>10}{'text tokens':>13}{'padding, input order':>22}"
          f"{'padding, length order':>23}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.benchmarks:
            sheet = unpack_full_sheet(SHEETS[name], Path(tmp))  # sha256-checked
            out = Path(tmp) / f"{name}.jsonl"
            prepare(name, sheet, out)
            records = read_qa_records(out)
            texts = []
            for r in records:
                prompt = backbone.prompt(r.task, r.question, r.options)
                texts.append(len(backbone.tokenizer(prompt.before + prompt.after, add_special_tokens=False).input_ids))
            lengths = [t + args.visual for t in texts]
            shares = []
            for order in (list(range(len(records))), length_order(records)):
                pad = pool_padding(lengths, order, args.pool, args.group)
                shares.append(f"{pad / (pad + sum(lengths)):.2%} ({pad / len(records):.1f}/q)")
            print(f"{name:<16}{len(records):>10}{statistics.mean(texts):>8.0f} mean{shares[0]:>22}{shares[1]:>23}",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
