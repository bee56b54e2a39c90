"""The built-in synthetic multi-view data (no download): the default configuration.

    python -m experiments.show_data --config=experiments/configs/synthetic.py --out=sheet.png

writes a contact sheet of multi-view samples with their 2D skeletons in a few seconds.
`get_config(arg)` takes the training mode after the colon (":ws", ":fs", ":2d"; default ws).
"""

from ml_collections import config_dict


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  mode = arg or "ws"
  if mode not in ("ws", "fs", "2d"):
    raise ValueError(f"Unknown mode {mode!r} after the colon: use ws, fs or 2d")
  config = config_dict.ConfigDict()
  config.mode = mode
  config.data = config_dict.ConfigDict(dict(
      source="synthetic",
      image_size=128,
      num_views=4,
      seed=0,
      motion="auto",  # DeepMimic clips (pybullet) + procedural; or "procedural"; or a .npy path
      occluder_probability=0.2,
  ))
  config.batch = config_dict.ConfigDict(dict(labeled=32, multiview=8, num_views=4))
  config.model = config_dict.ConfigDict(dict(name="hrnet_w8_small", dtype="float32"))
  return config
