"""The base of every attack (Captum's ``Perturbation``): a class whose ``perturb`` returns perturbed inputs."""

from __future__ import annotations

from typing import Any


class Perturbation:
    """Base of the perturbations and attacks; a subclass implements ``perturb``.

    Calling the object calls ``perturb``, so an attack can stand wherever a plain perturbation function is
    expected (:class:`~attribution.robust.AttackComparator`, :class:`~attribution.robust.MinParamPerturbation`).
    """

    def perturb(self, *args: Any, **kwargs: Any) -> Any:
        """The perturbed inputs, in the structure of ``inputs`` (a tensor or a tuple of tensors).

        Raises:
            NotImplementedError: always here; subclasses implement it.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement perturb(inputs, ...)")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.perturb(*args, **kwargs)
