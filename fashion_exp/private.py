"""The ledger of private library members fashion_exp uses, one module per library:

- keras-tuner: search/keras_tuner_fixes.py
- MLflow: tracking/mlflow_private.py
- Keras: head/keras_private.py

Each lists its uses as Private records: the member, the modules that use it, and why no public way
does the job. tests/test_private_members.py checks that every member still exists upstream as it
was written against (a callable's signature, an instance attribute the upstream class still sets)
and that no module of fashion_exp uses a private member, or imports a private module, that no
ledger names. So an upgrade that moves one fails there, and the use is looked at again.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class Private:
    """One private library member fashion_exp uses.

    member: "module:Attribute.chain" ("keras_tuner.src.utils:save_json"), or a private module
      alone ("keras_tuner.src.protos").
    used_in: the fashion_exp modules that use it (paths under fashion_exp/).
    why: why no public way does the job.
    signature: a callable's signature as it was written against ("(self, values)"); "" to skip.
    instance: the member is an attribute the upstream class sets on its instances (self.<name>),
      checked in the class's source (it is no class attribute).
    """

    member: str
    used_in: tuple[str, ...]
    why: str
    signature: str = ""
    instance: bool = False

    @property
    def name(self) -> str:
        """The private name itself: the last part of the member."""
        return self.member.replace(":", ".").rsplit(".", 1)[-1]

    @property
    def module(self) -> str:
        return self.member.split(":", 1)[0]

    def problem(self) -> str | None:
        """What changed upstream, in one line, or None while the member is as written against."""
        try:
            owner = importlib.import_module(self.module)
        except ImportError as err:
            return f"{self.member}: its module no longer imports ({err})"
        if ":" not in self.member:
            return None
        *path, last = self.member.split(":", 1)[1].split(".")
        for part in path:
            owner = getattr(owner, part, None)
            if owner is None:
                return f"{self.member}: {part} is gone"
        if self.instance:
            source = inspect.getsource(owner)
            return None if f"self.{last}" in source else f"{self.member}: the class no longer sets self.{last}"
        if not hasattr(owner, last):
            return f"{self.member}: gone"
        if self.signature:
            found = str(inspect.signature(getattr(owner, last)))
            if found != self.signature:
                return f"{self.member}: signature {found}, written against {self.signature}"
        return None
