"""`directions.kind: hessian` — eigenvectors of the Hessian at θ*: the directions in which the
loss curves most.

`eigenvectors: top` (the default) takes the two eigenvectors of the largest eigenvalues;
`eigenvectors: extremes` takes the largest and the most negative one, so the plane shows a
saddle where there is one (random planes rarely do). The Hessian is the one the `hessian:`
section defines (the mean loss on hessian.split, w.r.t. hessian.params, Lanczos to
hessian.tol), computed once at θ* on the configured device and stored in the direction file
like any other kind. The vectors are unit vectors over the Hessian's parameters and zero on
the others (biases and BN with params: weights); each is signed so that its entry of largest
magnitude is positive, so the same Hessian gives the same file on any machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lsurf.errors import ConfigError
from lsurf.kinds import Context, Inputs, Kind

if TYPE_CHECKING:
    import torch

    from lsurf.config import DirectionsConfig
    from lsurf.directions import Directions


class HessianPlane(Kind):
    name = "hessian"
    keys = ("eigenvectors", "trajectory", "pattern", "trajectories")
    uses_hessian = True

    def resolve(self, settings: DirectionsConfig, plane: bool) -> DirectionsConfig:
        return dataclasses.replace(settings, norm="none", ignore="none")

    def compute(self, settings: DirectionsConfig, context: Context, inputs: Inputs) -> Directions:
        from lsurf import hessian, params
        from lsurf.directions import Directions

        assert context.curvature is not None, "the pipeline supplies the Hessian to this kind"
        operator, curvature = context.curvature()
        wanted = 2 if context.plane else 1
        if settings.eigenvectors == "top":
            top = hessian.top_eigenpairs(
                operator,
                min(wanted, operator.size),
                curvature.tol,
                curvature.max_products,
                curvature.seed,
                vectors=True,
            )
            assert top.vectors is not None
            vectors, converged = list(top.vectors), top.converged
            values = [float(value) for value in top.values]
        else:
            ends = hessian.extreme_eigenpairs(
                operator, curvature.tol, curvature.max_products, curvature.seed, vectors=True
            )
            assert ends.max_vector is not None and ends.min_vector is not None
            vectors, converged = [ends.max_vector, ends.min_vector], ends.converged
            values = [ends.max_eig, ends.min_eig]
        if not converged:
            raise ConfigError(
                f"the Hessian's eigenvectors did not reach hessian.tol {curvature.tol:g} within "
                f"hessian.max_products {curvature.max_products} products; raise "
                "hessian.max_products (or loosen hessian.tol)"
            )
        weights = params.movable(context.model, include_buffers=False)
        spread = [_per_tensor(vector, operator, weights) for vector in vectors[:wanted]]
        return Directions(
            kind=self.name,
            norm="none",
            ignore="none",
            seed=curvature.seed,
            x=spread[0],
            y=spread[1] if context.plane else None,
            eigenvalues=tuple(values[:wanted]),
        )

    def describe(self, settings: Mapping[str, Any]) -> str:
        text = f"eigenvectors={settings.get('eigenvectors')}  {settings.get('hessian', '')}"
        return text.rstrip()

    def subject(self, settings: Mapping[str, Any]) -> str:
        if settings.get("eigenvectors") == "extremes":
            return "Hessian eigenvectors of the largest and smallest eigenvalue"
        return "Hessian eigenvectors of the two largest eigenvalues"

    def axis_labels(self, settings: Mapping[str, Any], checkpoint: str) -> tuple[str, str]:
        if settings.get("eigenvectors") == "extremes":
            return "α (eigenvector of λmax)", "β (eigenvector of λmin)"
        return "α (eigenvector of λ1)", "β (eigenvector of λ2)"


def _per_tensor(
    vector: torch.Tensor, operator: Any, weights: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A flat eigenvector as float32 CPU tensors keyed like the weights, zero off the Hessian's
    parameters, signed so that its largest-magnitude entry is positive."""
    import torch

    vector = vector.detach().to("cpu", torch.float64)
    if vector[int(vector.abs().argmax())] < 0:
        vector = -vector
    spread = {key: torch.zeros(tuple(w.shape), dtype=torch.float32) for key, w in weights.items()}
    for name in operator.names:
        spread[name] = vector[operator.block(name)].reshape(spread[name].shape).float()
    return spread
