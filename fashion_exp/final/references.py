"""The models a `combine` names: two or more, none twice. Checked before TensorFlow is imported (the
command line) and again by combine() itself (a caller of the library)."""

from __future__ import annotations

from fashion_exp.errors import UserError


def check_references(references: list[str]) -> None:
    if len(references) < 2:
        raise UserError("combine: give two --model or more (registry URIs, runs:/ URIs or model folders)")
    repeated = sorted({r for r in references if references.count(r) > 1})
    if repeated:
        raise UserError(f"combine: {repeated[0]} is given twice")
