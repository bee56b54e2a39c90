"""What the studies that compare forms of one train case share (dispatch_overhead,
checkpoint_cost): the --case and --forms flags, and the main that measures each form."""

from __future__ import annotations

import json
from typing import Callable, Sequence

from absl import app, flags

from experiments import benchmark

_CASE = flags.DEFINE_string("case", "2d:hrnetv2_w8_small:64:32:0", "objective:model:image_size:"
                            "labeled:multiview[:dtype], as in experiments.benchmark "
                            "--train_configs; the default is the main job's stage 1 up to "
                            "session 28 (its model since: hrnetv2_w8_small_hr16).")
_FORMS = flags.DEFINE_list("forms", None, "Which of the study's forms to measure, in this order "
                           "(default: all of them).")


def run_forms(forms: Sequence[str], measure: Callable[[str, object, int], dict]) -> list[dict]:
  """Rows of measure(form, config, repeats) for each of --forms (default: `forms`) on --case's
  config, each printed as JSON when measured; all of them also to --json (experiments.benchmark's
  --repeats and --json)."""
  chosen = _FORMS.value or list(forms)
  unknown = [form for form in chosen if form not in forms]
  if unknown:
    raise app.UsageError(f"--forms: {unknown} not among this study's forms {list(forms)}")
  config = benchmark.train_config(_CASE.value)
  rows = []
  for form in chosen:
    rows.append(measure(form, config, flags.FLAGS.repeats))
    print(json.dumps(rows[-1]), flush=True)
  if flags.FLAGS.json:
    with open(flags.FLAGS.json, "w") as f:
      json.dump(rows, f, indent=1)
  return rows
