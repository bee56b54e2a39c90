"""posejax: weakly-supervised 3D human pose from single images, learned from multi-view images.

The pure-math layer (no Flax) lives at the top level: `skeleton`, `geometry`, `procrustes`,
`losses`, `metrics`.
"""

from posejax import geometry, losses, metrics, procrustes, skeleton
from posejax.skeleton import H36M, Skeleton

__all__ = ["geometry", "losses", "metrics", "procrustes", "skeleton", "H36M", "Skeleton"]
