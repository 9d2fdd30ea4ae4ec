"""Model families: the registry that picks one for a job by its spec's `family:` key.

Built in: `tabular` (training.families.tabular), the default; `text`
(training.families.text: free text and a label, a transformer encoder); and `image`
(training.families.image: labelled image folders, a vision backbone). Another family plugs in by
registering itself before the job reads its spec, in the process that trains:

    from training import families
    families.register(MyFamily)        # a training.families.base.Family subclass
    ...                                # specs may now say `family: <MyFamily.name>`
    families.unregister(MyFamily.name)

(tests/families/echo_family.py is such a family: it trains, exports, is promoted and serves
through the real job without a change to it.)
"""

from __future__ import annotations

import re
from typing import Any

from dropflow.errors import UserInputError
from dropflow.vocabulary.datasets import SPEC_FILE
from dropflow.vocabulary.spec import DEFAULT_FAMILY, FAMILY_NAME, Spec
from training.families.base import Family
from training.families.image import ImageFamily
from training.families.tabular import TabularFamily
from training.families.text import TextFamily

_REGISTRY: dict[str, type[Family[Any]]] = {
    TabularFamily.name: TabularFamily,
    TextFamily.name: TextFamily,
    ImageFamily.name: ImageFamily,
}


def register(family: type[Family[Any]]) -> None:
    """Make `family` the one a spec's `family: <family.name>` trains with (replacing any)."""
    if not re.fullmatch(FAMILY_NAME, family.name):
        raise ValueError(f"family name {family.name!r}: use 1-40 lowercase letters, digits, - or _")
    _REGISTRY[family.name] = family


def unregister(name: str) -> None:
    """Undo register(name); the built-in default cannot be removed."""
    if name == DEFAULT_FAMILY:
        raise ValueError(f"{name!r} is the built-in default family")
    _REGISTRY.pop(name, None)


def family_for(spec: Spec) -> Family[Any]:
    """The family the spec asks for (tabular unless it says otherwise).

    Raises UserInputError, naming the key, for a name this process has no family for.
    """
    factory = _REGISTRY.get(spec.family)
    if factory is None:
        known = ", ".join(sorted(_REGISTRY))
        raise UserInputError(
            f"{SPEC_FILE}: family: unknown family {spec.family!r}; choose one of {known}"
        )
    return factory()


__all__ = ["Family", "family_for", "register", "unregister"]
