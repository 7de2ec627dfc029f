"""A researcher's own code, as it might sit in any lab's repository: a classifier of 1-D
signals (models), the synthetic signals it learns from (data), the loss it is trained with
(losses) and a trainer (train). Nothing here imports lsurf: lsurf reaches these objects by
their import paths (`mylab.models:SignalNet`, ...) or through its Python API."""
