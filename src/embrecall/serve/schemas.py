"""Request and response bodies of the recall service; every size is bounded."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

__all__ = ["RecallRequest", "BatchRecallRequest", "RecalledItem", "RecallResponse", "BatchRecallResponse",
           "ItemUpsert", "MAX_K"]

MAX_K = 1000
Scalar = str | int | float | bool | None
Id = Field(min_length=1, max_length=256)


class RecallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    recent_items: list[str] = Field(default_factory=list, max_length=500,
                                    description="Items clicked since the bundle was built, oldest first.")
    context: dict[str, Scalar] = Field(default_factory=dict, max_length=32,
                                       description="Event context such as city or hour (unix 'timestamp').")
    k: int = Field(100, ge=1, le=MAX_K)
    filters: dict[str, list[str]] = Field(default_factory=dict, max_length=16,
                                          description="Attribute -> accepted values, e.g. {'category': ['c1']}.")
    exclude: list[str] = Field(default_factory=list, max_length=10_000)
    quotas: dict[str, Annotated[float, Field(ge=0)]] | None = Field(
        default=None, max_length=8,
        description="Share of the k slots per channel (two_tower, popular, and itemcf where the version has it); "
                    "default: the version's channels.serve.")


class BatchRecallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[RecallRequest] = Field(min_length=1, max_length=256)


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


class ItemUpsert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attributes: dict[str, Scalar] = Field(default_factory=dict, max_length=64,
                                          description="Item attributes the item tower reads (category, title...).")
