"""Evaluation: predictions -> judgments -> metrics -> report (DESIGN.md §1, docs/internals.md).

Modules (imported on demand; nothing here touches the network at import):

* ``writer``    PredictionWriter: per-rank prediction logs, resume, merge.
* ``choice``    ``parse_choice``: multiple-choice letter parsing (reference quirks, strict, VideoMME).
* ``judge_prompts`` the Video-ChatGPT judge prompts and reply parsing.
* ``judge``     ``Judge`` / ``JudgeConfig``: cached, resumable GPT judge; ``judge_main`` (``dyto judge``).
* ``match``     offline string-match scorer (a labelled stand-in, not the GPT protocol).
* ``metrics``   ``compute_metrics``: accuracy / scores, reference and all-items denominators.
* ``paper``     the published DyTo numbers with source tags.
* ``report``    ``evaluate_run``: run dir -> logs/results.json + logs/report.md.
* ``callbacks`` ``EvaluateCallback``, ``WandbCallback``.
"""
