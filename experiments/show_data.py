"""Contact sheet of multi-view samples with their 2D skeletons, for a person to look at.

    python -m experiments.show_data --config=experiments/configs/synthetic.py --out=sheet.png

One row per multi-view sample (its V views side by side), then a row of single 2D-labeled
images. Visible joints are filled, hidden ones hollow; left limbs blue, right limbs red.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from experiments import cli

from posejax import viz
from posejax.data.render import synthetic

_CONFIG = config_flags.DEFINE_config_file("config", None, "Configuration file.")
_OUT = flags.DEFINE_string("out", "contact_sheet.png", "Where to write the PNG.")
_SAMPLES = flags.DEFINE_integer("samples", 3, "Multi-view samples (rows) to show.")
_STREAM = flags.DEFINE_enum("stream", "train_multiview", ["train_multiview", "test"],
                            "Which multi-view stream to show.")
_SCALE = flags.DEFINE_integer("scale", 2, "Upscaling of each crop in the sheet.")


def main(argv):
  del argv
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config=experiments/configs/synthetic.py")
  config = synthetic.config_from(_CONFIG.value.data)
  rows = []
  for index in range(_SAMPLES.value):
    sample = synthetic.sample(config, _STREAM.value, index)
    rows.append([viz.draw_skeleton(sample["image"][v], sample["joints_2d"][v],
                                   sample["joints_2d_mask"][v], scale=_SCALE.value)
                 for v in range(config.num_views)])
  singles = [synthetic.sample(config, "train_2d", i) for i in range(config.num_views)]
  rows.append([viz.draw_skeleton(s["image"], s["joints_2d"], s["joints_2d_mask"],
                                 scale=_SCALE.value) for s in singles])
  viz.contact_sheet(rows).save(_OUT.value)
  print(f"wrote {_OUT.value}: {_SAMPLES.value} {_STREAM.value} samples x {config.num_views} "
        f"views, and {len(singles)} train_2d images")


if __name__ == "__main__":
  cli.run(main, config_flags=[_CONFIG])
