"""Benchmark: what curvature costs — one Hessian-vector product against plain passes over a
split, and the products Lanczos spends per point (and ARPACK, when SciPy is importable).

On ResNet-20 (random initialization with its BN running statistics measured on the split,
eval mode, channels_last as the sweep's evaluator) and `--images` synthetic CIFAR-shaped
images (N(0, 1) pixels, random labels, fixed seeds) cut into `--batch-size` batches, it times
(a) one forward pass over the split (inference mode, the loss included, as a sweep evaluates
a point), (b) one forward + backward (the gradient of the same parameters the Hessian is
taken over) and (c) one Hessian-vector product (`lsurf.hessian.HessianOperator.matvec`). Each
is a median over `--repeats` alternating blocks (a, b, c, a, b, c, ...), so a burst of load
from elsewhere on a shared machine moves no ratio much. It prints seconds and the ratios
HVP/forward and HVP/(forward + backward) (target ≤ 3: a double backward costs about two
forward + backward passes, on top of the one it differentiates).

Then, at θ and at a perturbed point (every weight tensor W moved by 0.5·‖W‖·D/‖D‖, D ~ N(0, 1)
seeded: a point up the walls of the landscape), the products `extreme_eigenpairs` spends for
λmax and λmin at tolerance 1e-3 (hessian.tol's default) and 1e-2 (the reference's ARPACK
setting). With SciPy importable it also runs, at the `--arpack-tolerances` (default 1e-3),
`scipy.sparse.linalg.eigsh` on a LinearOperator around the same products, once for λmax
(which='LA') and once for λmin (which='SA'), from the same start vector, and counts its
products. ARPACK stops a Ritz pair when its residual is ≤ tol·|θ| of that pair, lsurf when it
is ≤ tol·max(|λmax|, |λmin|); so that both meet the same residual bound, ARPACK's tol for each
end is tol·max(|λmax|, |λmin|)/|λ_end| (from lsurf's values). A run past `--max-products` is
stopped and printed as "> N".

The defaults (64 images in two batches) keep the run near 3 minutes on 2 idle CPU threads
(a core shared with other work can slow threaded kernels many times over); products per
point move little with the split's size, and the ratios settle once batches are large
enough for the kernels, not Python, to dominate.

Run: .venv/bin/python benchmarks/hessian_cost.py [--images 64] [--batch-size 32]
     [--threads 2] [--device auto] [--arpack-tolerances 1e-3 1e-2] [--ncv 20]
     (SciPy is not an lsurf dependency: e.g. pip install --target /tmp/scipy scipy, then
     PYTHONPATH=/tmp/scipy .venv/bin/python benchmarks/hessian_cost.py)
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from lsurf import models
from lsurf.evaluate import configure_backends, pick_device
from lsurf.hessian import HessianOperator, curvature_parameters, extreme_eigenpairs
from lsurf.losses import Loss, build_loss

LABEL_WIDTH = 26  # the column where figures start
TOLERANCES = (1e-3, 1e-2)


class OverBudget(Exception):
    """ARPACK asked for more products than --max-products."""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(action: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    action()
    synchronize(device)
    return time.perf_counter() - started


def forward_pass(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], loss: Loss):
    """What a sweep does at a point: the mean loss, under inference mode."""
    with torch.inference_mode():
        sums = [loss.batch(model(inputs).float(), targets)[0] for inputs, targets in batches]
        return float(torch.stack(sums).sum())


def forward_backward(
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    loss: Loss,
    tensors: list[torch.Tensor],
) -> None:
    """The gradient of the loss sum w.r.t. the Hessian's parameters, batch by batch."""
    for inputs, targets in batches:
        total, _ = loss.batch(model(inputs).float(), targets)
        torch.autograd.grad(total, tensors)


def calibrate_batch_norm(
    model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    """BN running statistics measured on the split (one pass in train mode, a plain average):
    at random initialization they are 0 and 1, and eval mode would not normalize at all."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # None: the cumulative average over the batches seen
    model.train()
    with torch.no_grad():
        for inputs, _ in batches:
            model(inputs)
    model.eval()


def perturb(tensors: dict[str, torch.Tensor], scale: float, seed: int) -> None:
    """Move each tensor W by scale·‖W‖·D/‖D‖, D ~ N(0, 1) from a seeded CPU generator."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in tensors.values():
            direction = torch.randn(tensor.shape, generator=generator).to(tensor.device)
            tensor.add_(direction, alpha=scale * float(tensor.norm() / direction.norm()))


def arpack_products(
    operator: HessianOperator,
    which: str,
    tol: float,
    start: np.ndarray,
    budget: int,
    ncv: int | None,
) -> tuple[int, float | None]:
    """Products (and the eigenvalue, None past the budget) scipy's eigsh needs for one end."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    calls = 0

    def product(vector: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls > budget:
            raise OverBudget
        flat = torch.from_numpy(np.asarray(vector, dtype=np.float64).reshape(-1).copy())
        return operator.matvec(flat.to(operator.device)).cpu().numpy()

    linear = LinearOperator((operator.size, operator.size), matvec=product, dtype=np.float64)
    try:
        values = eigsh(
            linear, k=1, which=which, tol=tol, v0=start, ncv=ncv, return_eigenvectors=False
        )
    except OverBudget:
        return calls - 1, None
    return calls, float(values[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--images", type=int, default=64, help="examples in the split")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--params", choices=["weights", "all"], default="weights")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timing blocks")
    parser.add_argument("--max-products", type=int, default=200, help="per solver run")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="as evaluation.device"
    )
    parser.add_argument("--no-scipy", action="store_true", help="skip ARPACK even if importable")
    parser.add_argument(
        "--arpack-tolerances",
        type=float,
        nargs="*",
        default=[1e-3],
        help="the tolerances ARPACK also runs at (each costs two runs per point)",
    )
    parser.add_argument("--ncv", type=int, help="ARPACK's Krylov size (default: scipy's, 20)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    configure_backends("fp32")

    torch.manual_seed(0)
    model = models.build(args.model).to(device=device, memory_format=torch.channels_last).eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn((args.images, 3, 32, 32), generator=generator)
    labels = torch.randint(0, 10, (args.images,), generator=generator)
    images = images.to(device).contiguous(memory_format=torch.channels_last)
    labels = labels.to(device)
    batches = [
        (images[start : start + args.batch_size], labels[start : start + args.batch_size])
        for start in range(0, args.images, args.batch_size)
    ]
    loss = build_loss("cross_entropy")
    calibrate_batch_norm(model, batches)
    parameters = curvature_parameters(model, args.params)
    operator = HessianOperator(model, parameters, lambda: batches, loss)
    vector = torch.randn(operator.size, generator=generator, dtype=torch.float64).to(device)

    # Warm-up (allocator, kernel choice), then alternating blocks.
    tensors = list(parameters.values())
    forward_pass(model, batches, loss)
    forward_backward(model, batches, loss, tensors)
    operator.matvec(vector)
    forward: list[float] = []
    backward: list[float] = []
    product: list[float] = []
    for _ in range(args.repeats):
        forward.append(timed(lambda: forward_pass(model, batches, loss), device))
        backward.append(timed(lambda: forward_backward(model, batches, loss, tensors), device))
        product.append(timed(lambda: operator.matvec(vector), device))
    forward_median = statistics.median(forward)
    backward_median = statistics.median(backward)
    product_median = statistics.median(product)

    print(
        f"model {args.model}, {args.images} images, batch {args.batch_size}, hessian.params "
        f"{args.params} (n = {operator.size}), {torch.get_num_threads()} threads, "
        f"device {device.type}"
    )
    print(f"{'forward pass':{LABEL_WIDTH}s}{forward_median:.3f} s (median of {args.repeats})")
    print(f"{'forward + backward':{LABEL_WIDTH}s}{backward_median:.3f} s")
    print(f"{'Hessian-vector product':{LABEL_WIDTH}s}{product_median:.3f} s")
    print(f"{'ratio HVP/forward':{LABEL_WIDTH}s}{product_median / forward_median:.2f}")
    print(
        f"{'ratio HVP/(forward+back)':{LABEL_WIDTH}s}{product_median / backward_median:.2f}  "
        "(target <= 3)"
    )

    scipy_found = importlib.util.find_spec("scipy") is not None and not args.no_scipy
    start = torch.randn(operator.size, generator=torch.Generator().manual_seed(0))
    start = start.double().numpy()
    print(
        f"products per point for λmax and λmin (lsurf: one Lanczos run; ARPACK: "
        f"{'LA + SA' if scipy_found else 'SciPy not importable, skipped'})"
    )
    for point in ("θ", "perturbed"):
        if point == "perturbed":
            perturb(parameters, scale=0.5, seed=2)
        loss_value = forward_pass(model, batches, loss) / args.images
        for tol in TOLERANCES:
            started = time.perf_counter()
            found = extreme_eigenpairs(operator, tol, args.max_products, seed=0)
            seconds = time.perf_counter() - started
            state = "converged" if found.converged else "NOT converged"
            line = (
                f"  {point:9s} loss {loss_value:.3f} tol {tol:.0e}: lsurf {found.products:4d} "
                f"({seconds:.0f} s, {state}; λmax {found.max_eig:.4g}, λmin {found.min_eig:.4g})"
            )
            if scipy_found and tol in args.arpack_tolerances:
                scale = max(abs(found.max_eig), abs(found.min_eig))
                ends = []
                for which, value in (("LA", found.max_eig), ("SA", found.min_eig)):
                    equivalent = tol * scale / max(abs(value), 1e-300)
                    ends.append(
                        arpack_products(
                            operator, which, equivalent, start, args.max_products, args.ncv
                        )
                    )
                counts = [
                    f"{count}" if value is not None else f"> {count}" for count, value in ends
                ]
                total = sum(count for count, _ in ends)
                over = "> " if any(value is None for _, value in ends) else ""
                line += f"; ARPACK {counts[0]} + {counts[1]} = {over}{total}"
                values = [f"{value:.4g}" if value is not None else "-" for _, value in ends]
                line += f" (λmax {values[0]}, λmin {values[1]})"
            print(line, flush=True)


if __name__ == "__main__":
    main()
