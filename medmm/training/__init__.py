"""Training: the loop, losses, adversarial examples, DDP and the run directory.

>>> import medmm
>>> run = medmm.train("workflows/ct_chest_demo.yaml", training__epochs=1)  # doctest: +SKIP
>>> run.run_dir, run.best["val_macro_auroc"]                               # doctest: +SKIP

Overrides are dotted workflow keys; as keyword arguments the dots are written ``__``
(``training__epochs=1`` = ``--set training.epochs=1``), or pass ``overrides={"training.epochs": 1}``.
"""

from medmm.models.adversarial import perturb
from medmm.training.engine import Run, train
from medmm.models.run_meta import hash_patient_id

__all__ = ["Run", "train", "perturb", "hash_patient_id"]
