"""`lsurf train`: the training runs whose checkpoints and trajectories lsurf sweeps.

- `trainer`: the run, epoch by epoch, resumable after any crash;
- `recipe`: what each epoch does to the numbers (optimizer, schedule, seeds, augmentation);
- `folder`: the run's folder on disk (config, checkpoints, log, the commit point);
- `curve`: a curve's bend between two checkpoints, trained the same way (lsurf connect).
"""

__all__ = ["curve", "folder", "recipe", "trainer"]
