"""Typed message contracts: a handler's body model, checked before the handler runs.

``@handler("orders", model=Order)`` takes ``Order`` as a dataclass, a msgspec ``Struct``
or a pydantic model. The host validates and converts each body before the handler sees it
(``message.body`` is then an ``Order``); a body that does not fit is refused with a
:class:`BodyInvalid` whose message names the field path (``$.items[0].qty``), which the
requester gets as its ``RemoteError``. A handler may return a model instance: it is turned
into plain data for the codec. A topic with a model advertises its JSON Schema in the
node's hello (docs/wire.md), so ``p2phost describe`` can show it.

Dataclasses and Structs are converted by msgspec, pydantic models by pydantic: the SDK
imports neither until a model of that kind is declared.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

from ._errors import BodyInvalid, ModelError

#: The model kinds ``handler(model=...)`` takes.
MODEL_KINDS = ("dataclass", "msgspec", "pydantic")


def _pydantic_base() -> type | None:
    module = sys.modules.get("pydantic")
    return getattr(module, "BaseModel", None) if module is not None else None


def _msgspec_struct() -> type | None:
    module = sys.modules.get("msgspec")
    return getattr(module, "Struct", None) if module is not None else None


def _kind(model: Any) -> str | None:
    if not isinstance(model, type):
        return None
    # A model class's own library is imported already (the class came from it).
    base = _pydantic_base()
    if base is not None and issubclass(model, base):
        return "pydantic"
    struct = _msgspec_struct()
    if struct is not None and issubclass(model, struct):
        return "msgspec"
    if dataclasses.is_dataclass(model):
        return "dataclass"
    return None


def _msgspec() -> Any:
    try:
        import msgspec
    except ImportError:  # pragma: no cover - p2phost depends on msgspec
        raise ModelError("dataclass models need msgspec to convert bodies",
                         "fix: pip install msgspec") from None
    return msgspec


@dataclass(frozen=True)
class Contract:
    """The model of one topic's bodies: how to check one, and its JSON Schema."""

    model: type
    kind: str

    @property
    def name(self) -> str:
        """The model's class name."""
        return self.model.__name__

    def load(self, topic: str, body: Any) -> Any:
        """``body`` as a model instance; :class:`BodyInvalid` names the field that is wrong."""
        if isinstance(body, self.model):
            return body
        if self.kind == "pydantic":
            try:
                return self.model.model_validate(body)  # type: ignore[attr-defined]
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise BodyInvalid(topic, self.name, _pydantic_detail(exc)) from None
        msgspec = _msgspec()
        try:
            return msgspec.convert(body, type=self.model)
        except msgspec.ValidationError as exc:
            raise BodyInvalid(topic, self.name, str(exc)) from None

    def schema(self) -> dict[str, Any]:
        """The model's JSON Schema."""
        if self.kind == "pydantic":
            return dict(self.model.model_json_schema())  # type: ignore[attr-defined]
        return dict(_msgspec().json.schema(self.model))


def _pydantic_detail(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for error in errors()[:5]:
        path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                             for p in error.get("loc", ()))
        parts.append(f"{error.get('msg', 'invalid')} - at `{path}`")
    return "; ".join(parts)


def contract_of(model: Any) -> Contract:
    """The contract of ``model``; :class:`ModelError` when it is not a supported kind."""
    kind = _kind(model)
    if kind is None:
        raise ModelError(
            f"model={model!r} is not a dataclass, a msgspec Struct or a pydantic model "
            "(fix: decorate the class with @dataclasses.dataclass, or subclass "
            "msgspec.Struct or pydantic.BaseModel)")
    if kind != "pydantic":
        _msgspec()
    return Contract(model, kind)


_PLAIN = frozenset({dict, list, str, int, float, bool, type(None), bytes, tuple})


def to_builtins(value: Any) -> Any:
    """A model instance (dataclass, Struct, pydantic model) as plain data; anything else
    as it is. So ``send``, ``request`` and handlers' replies may carry model instances."""
    if type(value) in _PLAIN:
        return value
    kind = _kind(type(value))
    if kind is None:
        return value
    if kind == "pydantic":
        return value.model_dump(mode="json")
    return _msgspec().to_builtins(value)


def contract_of_handler(handler: Any) -> Contract | None:
    """The contract a handler was declared with (``handler(model=...)``), or None."""
    contract = getattr(handler, "__p2phost_contract__", None)
    return contract if isinstance(contract, Contract) else None
