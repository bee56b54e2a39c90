"""A heatmap-free, DETR-style 3D pose transformer with joint queries, in Flax NNX.

image -> HRNet multi-resolution maps (strides 4/8/16/32) -> per level 1x1 conv to d_model +
GroupNorm, flattened, with a sine position encoding and a learned level embedding -> a post-norm
transformer encoder over all tokens -> a decoder of N learned queries -> per decoder layer a
class head over the J joint types + background and a 3D coordinate head. Training matches
queries to joints (`posejax.matching`); inference reads each joint type from its most confident
query (PRTR's class-only read-out).

References: DETR (Carion et al., arXiv 2005.12872; facebookresearch/detr `models/transformer.py`,
`models/position_encoding.py`), Deformable DETR (Zhu et al., arXiv 2010.04159: level embedding,
iterative refinement with detached references), PRTR (Li et al., CVPR 2021; mlpc-ucsd/PRTR).

Coordinates are root-relative and scale-normalised (the skeleton's scale pair, thorax-pelvis for
humans, has length 1), like every 3D quantity inside posejax models. Parameters are float32;
`dtype` sets the compute dtype; outputs are float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from posejax import matching as matching_lib
from posejax.models.hrnet import HRNet
from posejax.models.posenet import IMAGENET_MEAN, IMAGENET_STD
from posejax.skeleton import H36M, Skeleton

MATCHINGS = ("hungarian", "fixed")


def sine_position_encoding(height: int, width: int, dim: int, *, temperature: float = 1e4,
                           scale: float = 2 * math.pi):
  """DETR's normalised sine position encoding of an h x w grid.

  Row i and column j are embedded as y = (i + 1) / h * scale and x = (j + 1) / w * scale; each
  takes dim / 2 channels [sin(t / T^(0/(dim/2))), cos(t / T^(0/(dim/2))), sin(t / T^(2/(dim/2))),
  cos(...), ...] with T = temperature; the y channels come first.

  Args:
    height, width: grid size.
    dim: channels, a multiple of 4.
    temperature: T.
    scale: the range of the normalised coordinates.

  Returns:
    [height, width, dim] float32 (a constant).
  """
  if dim % 4:
    raise ValueError(f"The sine position encoding needs a multiple of 4 channels, got {dim}")
  half = dim // 2
  eps = 1e-6  # as DETR
  y = np.arange(1, height + 1, dtype=np.float64) / (height + eps) * scale
  x = np.arange(1, width + 1, dtype=np.float64) / (width + eps) * scale
  frequencies = temperature**(2 * (np.arange(half) // 2) / half)
  sin_channel = (np.arange(half) % 2) == 0

  def embed(t):
    angles = t[:, None] / frequencies
    return np.where(sin_channel, np.sin(angles), np.cos(angles))  # [n, half]

  pos_y = np.broadcast_to(embed(y)[:, None, :], (height, width, half))
  pos_x = np.broadcast_to(embed(x)[None, :, :], (height, width, half))
  return jnp.asarray(np.concatenate([pos_y, pos_x], axis=-1), jnp.float32)


class MLP(nnx.Module):
  """`num_layers` Linear layers with ReLU between them (DETR's MLP)."""

  def __init__(self, in_features: int, hidden: int, out_features: int, num_layers: int, *,
               zero_last: bool = False, dtype=jnp.float32, rngs: nnx.Rngs):
    sizes = [in_features] + [hidden] * (num_layers - 1) + [out_features]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
      last = i == num_layers - 1
      init = nnx.initializers.zeros if last and zero_last else nnx.initializers.lecun_normal()
      layers.append(nnx.Linear(a, b, kernel_init=init, dtype=dtype, rngs=rngs))
    self.layers = nnx.List(layers)

  def __call__(self, x):
    for i, layer in enumerate(self.layers):
      x = layer(x)
      if i < len(self.layers) - 1:
        x = nnx.relu(x)
    return x


class MultiScaleInput(nnx.Module):
  """Backbone maps -> one token sequence with position encodings.

  Each level: 1x1 conv to d_model + GroupNorm (32 groups, or gcd(32, d_model)), flattened row
  by row; levels concatenated in the order given. The position of a token is the sine encoding
  of its grid cell plus its level's learned embedding (Deformable DETR's `level_embed`).
  """

  def __init__(self, in_channels: Sequence[int], d_model: int, *, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.d_model = d_model
    self.dtype = dtype
    groups = math.gcd(32, d_model)
    self.projections = nnx.List([
        nnx.Conv(c, d_model, (1, 1), dtype=dtype, rngs=rngs) for c in in_channels])
    self.norms = nnx.List([
        nnx.GroupNorm(d_model, num_groups=groups, dtype=dtype, rngs=rngs) for _ in in_channels])
    self.level_embed = nnx.Param(
        jax.random.normal(rngs.params(), (len(in_channels), d_model), jnp.float32))

  def __call__(self, features: Sequence[jax.Array]):
    """Tokens of all levels.

    Args:
      features: L maps [B, h_l, w_l, C_l].

    Returns:
      (tokens [B, T, d_model] in the compute dtype, pos [T, d_model] float32), T = sum h_l w_l.
    """
    if len(features) != len(self.projections):
      raise ValueError(f"Expected {len(self.projections)} levels, got {len(features)}")
    tokens, positions = [], []
    for level, (x, projection, norm) in enumerate(zip(features, self.projections, self.norms)):
      batch, height, width, _ = x.shape
      x = norm(projection(x.astype(self.dtype)))
      tokens.append(x.reshape(batch, height * width, self.d_model))
      pos = sine_position_encoding(height, width, self.d_model).reshape(-1, self.d_model)
      positions.append(pos + self.level_embed[...][level])
    return jnp.concatenate(tokens, axis=1), jnp.concatenate(positions, axis=0)


def _attention(d_model, num_heads, dropout, dtype, rngs):
  return nnx.MultiHeadAttention(num_heads, d_model, d_model, d_model, dropout_rate=dropout,
                                deterministic=False, decode=False, dtype=dtype, rngs=rngs)


class FeedForward(nnx.Module):
  """Linear(d, ffn) -> ReLU -> Dropout -> Linear(ffn, d)."""

  def __init__(self, d_model, ffn_dim, dropout, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.linear1 = nnx.Linear(d_model, ffn_dim, dtype=dtype, rngs=rngs)
    self.linear2 = nnx.Linear(ffn_dim, d_model, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x):
    return self.linear2(self.dropout(nnx.relu(self.linear1(x))))


class EncoderLayer(nnx.Module):
  """Post-norm encoder layer (DETR): self-attention with q = k = x + pos, v = x; FFN."""

  def __init__(self, d_model, num_heads, ffn_dim, dropout, *, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.self_attn = _attention(d_model, num_heads, dropout, dtype, rngs)
    self.ffn = FeedForward(d_model, ffn_dim, dropout, dtype=dtype, rngs=rngs)
    self.norm1 = nnx.LayerNorm(d_model, dtype=dtype, rngs=rngs)
    self.norm2 = nnx.LayerNorm(d_model, dtype=dtype, rngs=rngs)
    self.dropout1 = nnx.Dropout(dropout, rngs=rngs)
    self.dropout2 = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x, pos):
    q = x + pos
    x = self.norm1(x + self.dropout1(self.self_attn(q, q, x)))
    return self.norm2(x + self.dropout2(self.ffn(x)))


class Encoder(nnx.Module):
  """E post-norm layers of full attention over all tokens (`attention="full"`)."""

  def __init__(self, d_model, num_heads, ffn_dim, num_layers, dropout, *, attention="full",
               dtype=jnp.float32, rngs: nnx.Rngs):
    if attention != "full":
      raise NotImplementedError(f"attention={attention!r}: only 'full' is implemented")
    self.layers = nnx.List([
        EncoderLayer(d_model, num_heads, ffn_dim, dropout, dtype=dtype, rngs=rngs)
        for _ in range(num_layers)])

  def __call__(self, tokens, pos):
    """The memory.

    Args:
      tokens: [B, T, d].
      pos: [T, d], added to the queries and keys of every layer.

    Returns:
      memory [B, T, d] in the compute dtype.
    """
    pos = pos.astype(tokens.dtype)
    for layer in self.layers:
      tokens = layer(tokens, pos)
    return tokens


class DecoderLayer(nnx.Module):
  """Post-norm decoder layer (DETR): query self-attention, cross-attention to the memory, FFN."""

  def __init__(self, d_model, num_heads, ffn_dim, dropout, *, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.self_attn = _attention(d_model, num_heads, dropout, dtype, rngs)
    self.cross_attn = _attention(d_model, num_heads, dropout, dtype, rngs)
    self.ffn = FeedForward(d_model, ffn_dim, dropout, dtype=dtype, rngs=rngs)
    self.norm1 = nnx.LayerNorm(d_model, dtype=dtype, rngs=rngs)
    self.norm2 = nnx.LayerNorm(d_model, dtype=dtype, rngs=rngs)
    self.norm3 = nnx.LayerNorm(d_model, dtype=dtype, rngs=rngs)
    self.dropout1 = nnx.Dropout(dropout, rngs=rngs)
    self.dropout2 = nnx.Dropout(dropout, rngs=rngs)
    self.dropout3 = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, tgt, query_pos, memory, memory_pos):
    q = tgt + query_pos
    tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, q, tgt)))
    attended = self.cross_attn(tgt + query_pos, memory + memory_pos, memory)
    tgt = self.norm2(tgt + self.dropout2(attended))
    return self.norm3(tgt + self.dropout3(self.ffn(tgt)))


class Decoder(nnx.Module):
  """D decoder layers over N learned queries, with per-layer class and coordinate heads.

  The content `tgt` starts at 0 and the learned `query_pos` [N, d] is added to queries and
  keys. Every layer l has its own heads: Linear(d, J + 1) for the class logits and MLP(d, d, 3)
  (3 layers) for the coordinates, applied after a shared final LayerNorm (DETR).

  With `refine_from_previous` (iterative refinement, as Deformable DETR's box refinement):
  each query carries a 3D estimate p, starting from a learned p_0 [N, 3]; layer l sees
  query_pos + MLP(p_(l-1)) as its position and predicts p_l = p_(l-1) + Delta_l, with p_(l-1)
  under `stop_gradient` for l >= 2 when `detach_previous` (p_0 itself is a parameter and stays
  trainable). The coordinate heads' last layers start at zero, so every layer starts at p_0.
  Otherwise each layer predicts its coordinates directly.
  """

  def __init__(self, d_model, num_heads, ffn_dim, num_layers, num_queries, num_classes,
               dropout, *, refine_from_previous=True, detach_previous=True,
               dtype=jnp.float32, rngs: nnx.Rngs):
    self.dtype = dtype
    self.refine_from_previous = refine_from_previous
    self.detach_previous = detach_previous
    self.layers = nnx.List([
        DecoderLayer(d_model, num_heads, ffn_dim, dropout, dtype=dtype, rngs=rngs)
        for _ in range(num_layers)])
    self.norm = nnx.LayerNorm(d_model, dtype=dtype, rngs=rngs)
    self.query_pos = nnx.Param(
        jax.random.normal(rngs.params(), (num_queries, d_model), jnp.float32))
    self.class_heads = nnx.List([
        nnx.Linear(d_model, num_classes, dtype=dtype, rngs=rngs) for _ in range(num_layers)])
    self.coord_heads = nnx.List([
        MLP(d_model, d_model, 3, 3, zero_last=refine_from_previous, dtype=dtype, rngs=rngs)
        for _ in range(num_layers)])
    if refine_from_previous:
      self.reference = nnx.Param(
          0.5 * jax.random.normal(rngs.params(), (num_queries, 3), jnp.float32))
      self.reference_pos = MLP(3, d_model, d_model, 2, dtype=dtype, rngs=rngs)
    else:
      self.reference = None
      self.reference_pos = None

  def __call__(self, memory, memory_pos):
    """Per-layer predictions.

    Args:
      memory: [B, T, d] encoder output.
      memory_pos: [T, d] its position encodings.

    Returns:
      (logits [L, B, N, J + 1] float32, coords [L, B, N, 3] float32), L = decoder layers.
    """
    batch = memory.shape[0]
    query_pos = self.query_pos[...].astype(self.dtype)
    query_pos = jnp.broadcast_to(query_pos, (batch,) + query_pos.shape)
    memory_pos = memory_pos.astype(memory.dtype)
    tgt = jnp.zeros_like(query_pos)
    if self.refine_from_previous:
      reference = self.reference[...]
      previous = jnp.broadcast_to(reference, (batch,) + reference.shape)
    all_logits, all_coords = [], []
    for index, (layer, class_head, coord_head) in enumerate(
        zip(self.layers, self.class_heads, self.coord_heads)):
      if self.refine_from_previous:
        if self.detach_previous and index > 0:
          previous = jax.lax.stop_gradient(previous)
        layer_pos = query_pos + self.reference_pos(previous.astype(self.dtype))
      else:
        layer_pos = query_pos
      tgt = layer(tgt, layer_pos, memory, memory_pos)
      hidden = self.norm(tgt)
      all_logits.append(class_head(hidden).astype(jnp.float32))
      coords = coord_head(hidden).astype(jnp.float32)
      if self.refine_from_previous:
        coords = previous + coords
        previous = coords
      all_coords.append(coords)
    return jnp.stack(all_logits), jnp.stack(all_coords)


def read_out(logits, coords, matching: str = "hungarian"):
  """The pose of one decoder layer's predictions.

  Args:
    logits: [..., N, J + 1].
    coords: [..., N, 3].
    matching: "hungarian": each joint from its most confident query
      (`matching.class_assignment`); "fixed": query j is joint j (N = J), scores 1.

  Returns:
    (pose_3d [..., J, 3], joint_scores [..., J]), float32.
  """
  coords = jnp.asarray(coords, jnp.float32)
  if matching == "fixed":
    if coords.shape[-2] != logits.shape[-1] - 1:
      raise ValueError(f"Fixed matching needs N = J queries, got logits {logits.shape}")
    return coords, jnp.ones(coords.shape[:-1], jnp.float32)
  if matching != "hungarian":
    raise ValueError(f"Unknown matching {matching!r}; use one of {MATCHINGS}")
  query_for_joint, scores = matching_lib.class_assignment(logits)
  return matching_lib.gather_queries(coords, query_for_joint), scores


class PoseTransformer(nnx.Module):
  """HRNet branches + transformer encoder-decoder with joint queries -> 3D pose.

  Args:
    backbone: an HRNet with `concat_branches=True` (its `branches` are the input levels).
    skeleton: the keypoint structure (J joints; classes 0..J-1 plus background J).
    d_model, num_heads, ffn_dim: transformer width, heads, FFN width.
    encoder_layers, decoder_layers: E and D.
    num_queries: N >= J candidates per image (ignored for matching="fixed": N = J).
    num_levels: backbone levels used, the lowest-resolution ones (default all; 1 = the
      stride-32 map only, DETR's single level).
    dropout: in attention weights, residual branches and FFNs.
    refine_from_previous, detach_previous: see `Decoder`.
    matching: "hungarian" (N candidates, read out by class, `posejax.matching`) or "fixed"
      (query j is joint j; pose_3d is the last layer's coords, scores 1).
    attention: encoder attention, "full" (all tokens).
    dtype: compute dtype of the transformer (the backbone has its own).
  """

  def __init__(self, backbone: HRNet, skeleton: Skeleton = H36M, *, d_model: int = 256,
               num_heads: int = 8, ffn_dim: int = 1024, encoder_layers: int = 6,
               decoder_layers: int = 6, num_queries: int = 100, num_levels: int | None = None,
               dropout: float = 0.1, refine_from_previous: bool = True,
               detach_previous: bool = True, matching: str = "hungarian",
               attention: str = "full", dtype=jnp.float32, rngs: nnx.Rngs):
    if matching not in MATCHINGS:
      raise ValueError(f"Unknown matching {matching!r}; use one of {MATCHINGS}")
    if attention != "full":
      raise NotImplementedError(f"attention={attention!r}: only 'full' is implemented")
    if not backbone.config.concat_branches:
      raise ValueError("The pose transformer reads every HRNet branch: build the backbone "
                       "with HRNetConfig(concat_branches=True)")
    num_joints = skeleton.num_joints
    if matching == "fixed":
      num_queries = num_joints
    elif num_queries < num_joints:
      raise ValueError(f"num_queries = {num_queries} < {num_joints} joints")
    channels = backbone.config.branch_channels(1 + len(backbone.config.stage_modules))
    num_levels = len(channels) if num_levels is None else num_levels
    if not 1 <= num_levels <= len(channels):
      raise ValueError(f"num_levels must be in 1..{len(channels)}, got {num_levels}")
    self.backbone = backbone
    self.skeleton = skeleton
    self.matching = matching
    self.num_queries = num_queries
    self.num_levels = num_levels
    self.dtype = dtype
    self.multi_scale = MultiScaleInput(channels[-num_levels:], d_model, dtype=dtype, rngs=rngs)
    self.encoder = Encoder(d_model, num_heads, ffn_dim, encoder_layers, dropout,
                           attention=attention, dtype=dtype, rngs=rngs)
    self.decoder = Decoder(d_model, num_heads, ffn_dim, decoder_layers, num_queries,
                           num_joints + 1, dropout, refine_from_previous=refine_from_previous,
                           detach_previous=detach_previous, dtype=dtype, rngs=rngs)

  def __call__(self, images, cameras=None) -> dict[str, jax.Array]:
    """Predictions for a batch of crops.

    Args:
      images: [..., H, W, 3] RGB in 0..255 (uint8 or float), normalised here with the ImageNet
        statistics as in `PoseNet`.
      cameras: [..., 3, 3] crop cameras K; unused (accepted for the PoseNet call signature).

    Returns:
      dict of float32 arrays: logits [L, ..., N, J + 1] and coords [L, ..., N, 3] of every
      decoder layer; pose_3d [..., J, 3] (root-relative, scale-normalised) and joint_scores
      [..., J] read from the last layer (`matching.class_assignment`; "fixed": coords[-1] and
      ones).
    """
    del cameras
    images = jnp.asarray(images)
    *batch, height, width, channels = images.shape
    x = (images.reshape(-1, height, width, channels).astype(jnp.float32)
         - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    levels = self.backbone.branches(x.astype(self.dtype))[-self.num_levels:]
    tokens, pos = self.multi_scale(levels)
    memory = self.encoder(tokens, pos)
    logits, coords = self.decoder(memory, pos)
    num_layers = logits.shape[0]
    logits = logits.reshape(num_layers, *batch, *logits.shape[2:])
    coords = coords.reshape(num_layers, *batch, *coords.shape[2:])
    pose_3d, scores = read_out(logits[-1], coords[-1], self.matching)
    return dict(logits=logits, coords=coords, pose_3d=pose_3d, joint_scores=scores)


def create_pose_transformer(backbone: str = "hrnetv2_w8_small", *, skeleton: Skeleton = H36M,
                            dtype=jnp.float32, rngs: nnx.Rngs, num_points: int = 4,
                            **kwargs) -> PoseTransformer:
  """A PoseTransformer on a named backbone of `posejax.models.BACKBONES`.

  The backbone is built with `concat_branches=True` (so its four levels are computed); its
  parameters then match a PoseNet's of the same name with that flag (e.g. "hrnetv2_w8_small").

  Args:
    backbone: a key of `posejax.models.BACKBONES`.
    skeleton: the keypoint structure.
    dtype: compute dtype (parameters stay float32).
    rngs: parameter and dropout randomness.
    num_points: deformable attention's sampling points; unused with attention="full".
    **kwargs: the other PoseTransformer arguments (d_model, num_heads, ffn_dim, encoder_layers,
      decoder_layers, num_queries, num_levels, dropout, refine_from_previous, detach_previous,
      matching, attention).
  """
  import dataclasses  # pylint: disable=import-outside-toplevel
  from posejax.models import BACKBONES  # pylint: disable=import-outside-toplevel
  del num_points
  if backbone not in BACKBONES:
    raise ValueError(f"Unknown backbone {backbone!r}; available: {sorted(BACKBONES)}")
  config = dataclasses.replace(BACKBONES[backbone], concat_branches=True)
  network = HRNet(config, dtype=dtype, rngs=rngs)
  return PoseTransformer(network, skeleton, dtype=dtype, rngs=rngs, **kwargs)
