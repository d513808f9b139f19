"""Request and response bodies of the recall service.

Everything a request may hold is checked here, at the edge: sizes are bounded, numbers are
finite (and a context ``timestamp`` is a time between 1970 and 2100), text is valid Unicode (a
lone surrogate cannot be written back as UTF-8), and a batch's total work (the sum of its k) is
capped, so what passes can be served without a 5xx.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from typing_extensions import TypedDict

from embrecall.data.timestamps import MAX_TIMESTAMP

__all__ = [
    "RecallRequest",
    "Parallel",
    "BatchRecallRequest",
    "RecalledItem",
    "RecallResponse",
    "BatchRecallResponse",
    "ItemUpsert",
    "ItemChange",
    "UserEvent",
    "UserEvents",
    "ErrorMessage",
    "ValidationErrors",
    "MAX_K",
    "MAX_BATCH_K",
    "check_text",
]

MAX_K = 1000
MAX_BATCH_K = 25_600  # a batch's summed k: 256 requests of k=100 (bounds its work and its reply, ~2 MB)


def check_text(text: str) -> str:
    """``text`` if it can be encoded as UTF-8 (JSON allows lone surrogates such as \\ud800; UTF-8 does not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return text


def _scalar(value: str | bool | int | float | None) -> str | bool | int | float | None:
    """A context or attribute value: text up to 4096 characters, or a number numpy can hold."""
    if isinstance(value, str):
        if len(value) > 4096:
            raise ValueError("text values may be at most 4096 characters")
        return check_text(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        raise ValueError("integers must fit in 64 bits")
    return value


Text = Annotated[str, AfterValidator(check_text)]
Id = Annotated[Text, Field(min_length=1, max_length=256)]
Number = Annotated[float, Field(allow_inf_nan=False, strict=True)]  # an int is taken as a float; a bool is not
Scalar = Annotated[str | bool | int | float | None, AfterValidator(_scalar)]  # floats finite (the models' config)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Parallel(_Strict):
    """Category-parallel recall (58.com): the user's top ``groups`` values of ``attribute`` by entity
    recall, each searched on its own, their lists merged in equal shares."""

    attribute: Id = Field(description="A filterable item attribute, such as 'category'.")
    groups: int = Field(3, ge=1, le=20)


class RecallRequest(_Strict):
    user_id: Id
    recent_items: list[Id] = Field(
        default_factory=list, max_length=500, description="Items clicked since the bundle was built, oldest first."
    )
    context: dict[Id, Scalar] = Field(
        default_factory=dict,
        max_length=32,
        description="Event context such as city or hour ('timestamp': unix seconds, 1970..2100).",
    )
    k: int = Field(100, ge=1, le=MAX_K)
    filters: dict[Id, list[Id]] = Field(
        default_factory=dict, max_length=16, description="Attribute -> accepted values, e.g. {'category': ['c1']}."
    )
    exclude: list[Id] = Field(default_factory=list, max_length=10_000)
    quotas: dict[Id, Annotated[Number, Field(ge=0)]] | None = Field(
        default=None,
        max_length=8,
        description="Weight (merge_mode rrf) or share of the k slots (quota) per channel (the channels the "
        "version serves: GET /v1/version); default: the version's channels.serve.",
    )
    target: Id = Field(
        "item",
        description="'item', or a filterable item attribute such as 'category': rank that "
        "attribute's values for the user with the two-tower model (entity "
        "recall); each answer's item_id then holds a value.",
    )
    parallel: Parallel | None = Field(None, description="Category-parallel recall of items.")

    @model_validator(mode="after")
    def _timestamp_is_a_time(self) -> RecallRequest:
        ts = self.context.get("timestamp")
        if ts is not None and (isinstance(ts, (bool, str)) or not 0 <= ts < MAX_TIMESTAMP):
            raise ValueError(f"context.timestamp must be unix seconds between 0 and {MAX_TIMESTAMP} (1970..2100)")
        return self

    @model_validator(mode="after")
    def _entity_target_alone(self) -> RecallRequest:
        if self.target != "item":
            used = [name for name in ("filters", "exclude", "quotas", "parallel") if getattr(self, name)]
            if used:
                raise ValueError(
                    f"target '{self.target}' ranks attribute values with the two-tower model: "
                    f"{', '.join(used)} apply to target 'item' only"
                )
        return self


class BatchRecallRequest(_Strict):
    requests: list[RecallRequest] = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _bounded_work(self) -> BatchRecallRequest:
        total = sum(r.k * (r.parallel.groups + 1 if r.parallel else 1) for r in self.requests)
        if total > MAX_BATCH_K:
            raise ValueError(
                f"the requests ask for {total:,} items in all (the sum of their k, times groups + 1 for "
                f"category-parallel ones); a batch may ask for at most {MAX_BATCH_K:,}: split it"
            )
        return self


class RecalledItem(TypedDict):  # not a model: a hundred per response, written at about half the cost
    item_id: str
    score: float
    channel: str


class RecallResponse(BaseModel):
    user_id: str
    items: list[RecalledItem]
    version: str
    cold_start: bool
    timings_ms: dict[str, float]


class BatchRecallResponse(BaseModel):
    responses: list[RecallResponse]


class ItemUpsert(_Strict):
    attributes: dict[Id, Scalar] = Field(
        default_factory=dict, max_length=64, description="Item attributes the item tower reads (category, title...)."
    )


class ItemChange(_Strict):
    """One entry of the item change feed, checked as ``PUT /v1/items`` checks its body."""

    op: Literal["upsert", "delete"]
    item_id: Id
    attributes: dict[Id, Scalar] = Field(default_factory=dict, max_length=64)


Timestamp = Annotated[
    int, Field(ge=0, lt=MAX_TIMESTAMP, strict=True, description="Unix seconds (1970..2100).")
]  # a bool is no time


class UserEvent(_Strict):
    """A user interacted with an item: it joins the user's history for the next recall."""

    user_id: Id
    item_id: Id
    timestamp: Timestamp | None = Field(None, description="When it happened; default: when it arrives.")


class UserEvents(_Strict):
    events: list[UserEvent] = Field(min_length=1, max_length=1000)


class ErrorMessage(BaseModel):
    """A refused request (400, 401, 403, 404, 413, 503): what is wrong, in words."""

    detail: str


class ValidationProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrors(BaseModel):
    """A request the service cannot use (422): each problem with where it is."""

    detail: list[ValidationProblem]
