"""Evaluation: predictions -> judgments -> metrics -> report (docs/internals.md).

Modules, by what each part is (imported on demand; nothing here touches the network at import):

* the judge protocol, without a client: ``judge_prompts`` (the Video-ChatGPT prompts, reply
  parsing) and ``protocol`` (``JudgeConfig``, what each prediction asks, cache keys, the cache);
* the judge client: ``judge`` (``Judge``: HTTP, retries, re-asks, budgets, progress) and
  ``judge_cli`` (``dyto judge``);
* scoring: ``choice`` (multiple-choice parsing), ``match`` (offline string-match stand-in),
  ``metrics`` (accuracy / scores, reference and all-items denominators), ``paper`` (published numbers);
* reports: ``report`` (``evaluate_run``: run folder -> logs/results.json + report.md) and
  ``compare`` (``dyto compare``);
* comparing reducers: ``stats`` (exact McNemar, bootstrap intervals), ``outcomes`` (a run's
  per-question right/wrong as its results scored it), ``paired`` (``dyto compare``'s paired
  tests), ``sweep`` + ``sweep_report`` (``dyto sweep``: a reducer x budget grid, each video
  decoded and encoded once).

The prediction writer lives on the predict side (``dyto.predict``), the Lightning callbacks in
``dyto.callbacks``, the run-folder layout in ``dyto.runs``.
"""
