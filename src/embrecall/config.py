"""The run configuration: one validated object that describes data, features, model, training and index.

A run is described by one TOML or YAML file; CLI flags override single fields with
``section.field=value``; the resolved config is saved with every output so a bundle
always says how it was made.  Defaults describe the synthetic demo run.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from embrecall.channel_table import CHANNELS, STORED
from embrecall.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "Config",
    "DataConfig",
    "ColumnMap",
    "TableConfig",
    "SyntheticConfig",
    "SplitConfig",
    "FeaturesConfig",
    "Feature",
    "ItemIdFeature",
    "CategoricalFeature",
    "HashedFeature",
    "NumericFeature",
    "MultiFeature",
    "HistoryFeature",
    "SequenceFeature",
    "ITEM_HISTORY",
    "TimeFeature",
    "TextFeature",
    "ModelConfig",
    "TrainConfig",
    "NegativesConfig",
    "IndexConfig",
    "EvalConfig",
    "Item2VecConfig",
    "ItemCFConfig",
    "SwingConfig",
    "EaseConfig",
    "TuneConfig",
    "SearchDim",
    "ChannelsConfig",
    "load_config",
    "apply_overrides",
    "set_field",
    "get_field",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- data


class ColumnMap(_Strict):
    """Names of the interaction columns in the input file."""

    user: str = "user_id"
    item: str = "item_id"
    timestamp: str = "timestamp"
    event: str | None = None
    weight: str | None = None


class TableConfig(_Strict):
    """A user-feature or item-feature table keyed by the user or item id."""

    path: Path
    key: str
    title: str | None = None  # item tables: the column shown next to recommendations


class SyntheticConfig(_Strict):
    """Size and shape of generated data (see ``embrecall.data.synthetic``)."""

    users: int = Field(2_000, ge=1)
    items: int = Field(1_000, ge=2)
    events: int = Field(60_000, ge=1)
    categories: int = Field(20, ge=1)
    cities: int = Field(10, ge=1)
    impressions: int = Field(0, ge=0)  # shown-but-not-clicked rows per click (event 'impression'; clicks 'click')
    # Scenes (an event column 'scene': s0 the largest, each next one ~0.45 times the one before), each
    # with its own featured categories and its own popular items inside a category; 0: no scene column.
    scenes: int = Field(0, ge=0, le=26)
    interests: bool = False  # users get an 'interests' column: their favourite categories and 0-5 noise tags
    seed: int = 0

    @model_validator(mode="after")
    def _fits(self) -> SyntheticConfig:
        if self.categories > self.items:
            raise ValueError(f"data.synthetic.categories ({self.categories}) must not exceed items ({self.items})")
        return self


class ShardsConfig(_Strict):
    """Reading a log larger than memory (``embrecall.data.shards``): the log is streamed once into
    ``count`` Parquet shards partitioned by user, split shard by shard, and trained on one shard at
    a time (under torchrun each rank reads its own shards).  Memory follows ``read_rows`` and the
    shard size (log / count), not the log."""

    count: int = Field(64, ge=1, le=4096)
    read_rows: int = Field(1_000_000, ge=1_000)  # rows read from the log at a time
    eval_users: int = Field(20_000, ge=100)  # users sampled from the shards for the test metrics
    folder: Path | None = None  # where shards are kept (default <out>/shards); shared by every machine


class DataConfig(_Strict):
    """Where the interaction log comes from and how to read it."""

    format: Literal["synthetic", "movielens", "table"] = "synthetic"
    path: Path | None = None  # movielens: the directory; table: the interactions file (CSV or Parquet)
    columns: ColumnMap = ColumnMap()
    timestamp_format: str = "auto"  # auto | unix_s | unix_ms | iso8601 | a strptime format such as %m/%d/%Y
    delimiter: str = ","
    header: bool = True
    events: list[str] | None = None  # event types that count as positives; None keeps all
    exposure_events: list[str] = []  # event types meaning "shown" (impressions): negatives, never positives
    context_columns: list[str] = []  # per-event columns (city, scene) kept for context features
    user_columns: list[str] = []  # user attributes carried on every interaction row
    item_columns: list[str] = []  # item attributes carried on every interaction row
    users: TableConfig | None = None
    items: TableConfig | None = None
    synthetic: SyntheticConfig = SyntheticConfig()
    shards: ShardsConfig | None = None  # set: read the log out of core (table format, ids and timestamps only)

    @model_validator(mode="after")
    def _path_needed(self) -> DataConfig:
        if self.format in ("movielens", "table") and self.path is None:
            raise ValueError(f"data.format = '{self.format}' needs data.path (a directory or file to read)")
        return self

    @model_validator(mode="after")
    def _every_setting_used(self) -> DataConfig:
        """A setting the chosen reader would ignore is refused: it would look applied and not be."""
        used = {
            "movielens": {"format", "path", "events", "exposure_events"},
            "synthetic": {"format", "synthetic", "events", "exposure_events"},
        }.get(self.format)
        fields = type(self).model_fields
        ignored = (
            []
            if used is None
            else sorted(  # a default written back (a dumped config) is not a setting
                f
                for f in fields
                if f not in used and getattr(self, f) != fields[f].get_default(call_default_factory=True)
            )
        )
        if ignored:
            hint = " (a MovieLens release brings its own user and item files)" if self.format == "movielens" else ""
            raise ValueError(
                f"data.format = '{self.format}' does not read data.{', data.'.join(ignored)}{hint}; "
                "remove them, or use data.format = 'table' to map your own columns and tables"
            )
        return self

    @model_validator(mode="after")
    def _shardable(self) -> DataConfig:
        """Shards carry user, item and time: a setting that needs more of each row is refused."""
        if self.shards is None:
            return self
        settings = {
            "columns.event": self.columns.event,
            "columns.weight": self.columns.weight,
            "events": self.events,
            "exposure_events": self.exposure_events,
            "context_columns": self.context_columns,
            "user_columns": self.user_columns,
            "item_columns": self.item_columns,
        }
        carried = [name for name, value in settings.items() if value]
        if carried:
            raise ValueError(
                f"data.shards reads user, item and timestamp of each row; data.{', data.'.join(carried)} "
                "need more of it: put user and item attributes in data.users / data.items tables, or "
                "leave data.shards out to read the log into memory"
            )
        return self


class SplitConfig(_Strict):
    """How events are split into train / validation / test (see ``embrecall.data.split``)."""

    kind: Literal["leave_last_out", "time"] = "leave_last_out"
    valid_start: str | None = None  # time split: ISO date/time or unix seconds
    test_start: str | None = None

    @model_validator(mode="after")
    def _cutoffs(self) -> SplitConfig:
        if self.kind == "time" and (self.valid_start is None or self.test_start is None):
            raise ValueError("split.kind = 'time' needs split.valid_start and split.test_start")
        return self


# ----------------------------------------------------------------------------- features


class _FeatureBase(_Strict):
    name: str = Field(min_length=1)
    column: str | None = None  # input column; defaults to the feature name
    dim: int = Field(16, ge=1)

    @property
    def input_column(self) -> str:
        return self.column or self.name


class ItemIdFeature(_FeatureBase):
    """The item's own id (item tower), embedded in the table that history features share."""

    kind: Literal["item_id"]
    name: str = "item_id"


class CategoricalFeature(_FeatureBase):
    """A column of discrete values with a fitted vocabulary; rare and unseen values share one OOV row."""

    kind: Literal["categorical"]
    min_count: int = Field(1, ge=1)
    source: Literal["table", "event"] = "table"  # event: read from the interaction row (context)
    # Share of training rows that see the value as unknown: the unknown row then learns the behaviour
    # over all values, which is what a value too rare for its own row (min_count) or never seen gets
    # (a small scene served by the global model's behaviour).
    mask_rate: float = Field(0.0, ge=0.0, lt=1.0)


class HashedFeature(_FeatureBase):
    """A high-cardinality column (geohash, zip) hashed into a fixed number of buckets; no vocabulary."""

    kind: Literal["hashed"]
    buckets: int = Field(10_000, ge=2)
    source: Literal["table", "event"] = "table"


class NumericFeature(_FeatureBase):
    """A number, standardised (optionally after log1p) or cut into quantile buckets."""

    kind: Literal["numeric"]
    transform: Literal["standardize", "log_standardize", "bucketize"] = "standardize"
    buckets: int = Field(10, ge=2)
    source: Literal["table", "event"] = "table"


class MultiFeature(_FeatureBase):
    """A multi-valued column (genres, tags) separated by ``sep``; embeddings are mean-pooled, or
    (``pool = "attention"``) weighted by a learned attention over the values (58.com's interest tags)."""

    kind: Literal["multi"]
    sep: str = "|"
    max_len: int = Field(16, ge=1)
    min_count: int = Field(1, ge=1)
    pool: Literal["mean", "attention"] = "mean"


class HistoryFeature(_FeatureBase):
    """The user's last ``max_len`` items before the event, pooled with recency weights.

    Weight of the item ``p`` steps back is ``decay**p``; ``learned_weights`` starts there and
    lets training adjust each position.  It shares the item-id embedding table, so ``dim`` is
    the model's ``item_embedding_dim``.
    """

    kind: Literal["history"]
    name: str = "history"
    max_len: int = Field(20, ge=1)
    decay: float = Field(0.8, gt=0.0, le=1.0)
    learned_weights: bool = True


class SequenceFeature(_FeatureBase):
    """The user's last ``max_len`` items in order, read by causal self-attention (SASRec-style).

    Shares the item-id table (its width is the model's ``item_embedding_dim``); learned positions
    count from the oldest item in view.  Training runs one pass per window of a user's events and
    pairs every position with the next item, so ``max_len`` events cost one pass, not ``max_len``.
    """

    kind: Literal["sequence"]
    name: str = "sequence"
    max_len: int = Field(50, ge=1)
    layers: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


ITEM_HISTORY = (HistoryFeature, SequenceFeature)  # user features that read the items before the event


class TimeFeature(_FeatureBase):
    """Hour of day or day of week of the event (context), from its timestamp in UTC."""

    kind: Literal["time"]
    part: Literal["hour", "weekday"] = "hour"


class TextFeature(_FeatureBase):
    """An item's text (title) as a MiniLM sentence embedding, projected to ``dim`` by the tower.

    Gives items nobody has clicked a useful vector; needs ``pip install 'embrecall[text]'``.
    """

    kind: Literal["text"]
    dim: int = Field(32, ge=1)


Feature = Annotated[
    Union[
        ItemIdFeature,
        CategoricalFeature,
        HashedFeature,
        NumericFeature,
        MultiFeature,
        HistoryFeature,
        SequenceFeature,
        TimeFeature,
        TextFeature,
    ],
    Field(discriminator="kind"),
]


def _default_user_features() -> list[Any]:
    return [
        CategoricalFeature(kind="categorical", name="user_id"),
        CategoricalFeature(kind="categorical", name="city", dim=8),
        HistoryFeature(kind="history", name="last_item", max_len=1),
        HistoryFeature(kind="history", name="history", max_len=20, decay=0.8),
    ]


def _default_item_features() -> list[Any]:
    return [
        ItemIdFeature(kind="item_id"),
        CategoricalFeature(kind="categorical", name="category", dim=8),
        CategoricalFeature(kind="categorical", name="item_city", column="city", dim=8),
        NumericFeature(kind="numeric", name="price", transform="log_standardize"),
    ]


class FeaturesConfig(_Strict):
    """The inputs of each tower."""

    user: list[Feature] = Field(default_factory=_default_user_features)
    item: list[Feature] = Field(default_factory=_default_item_features)
    catalog: Literal["events", "items"] = "events"  # items: every row of the item table is retrievable, clicked or not

    @model_validator(mode="after")
    def _sides(self) -> FeaturesConfig:
        for side, feats in (("user", self.user), ("item", self.item)):
            if not feats:
                raise ValueError(f"features.{side} is empty: each tower needs at least one feature")
            names = [f.name for f in feats]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"features.{side}: duplicate feature names {dup}; give each feature its own name")
        for f in self.user:
            if isinstance(f, (ItemIdFeature, TextFeature)):
                raise ValueError(f"features.user.{f.name}: kind '{f.kind}' belongs to the item tower")
        for f in self.item:
            if isinstance(f, (*ITEM_HISTORY, TimeFeature)) or getattr(f, "source", "table") == "event":
                raise ValueError(
                    f"features.item.{f.name}: the item tower takes item attributes only, "
                    "not history, time or event context"
                )
        if sum(isinstance(f, ItemIdFeature) for f in self.item) > 1:
            raise ValueError("features.item: at most one 'item_id' feature")
        if sum(isinstance(f, SequenceFeature) for f in self.user) > 1:
            raise ValueError("features.user: at most one 'sequence' feature (training windows follow its max_len)")
        return self


# ----------------------------------------------------------------------------- model, training, index


class ModelConfig(_Strict):
    """Tower shape: per-feature embeddings -> concat -> MLP -> L2-normalised output."""

    item_embedding_dim: int = Field(64, ge=1)  # the item-id table shared by item tower and history
    # Start the item-id table from item2vec vectors of the training events (channels.item2vec's settings,
    # its dim set to item_embedding_dim): fine-tuned with the rest, or frozen; none: random.
    pretrained_items: Literal["none", "fine_tune", "frozen"] = "none"
    # Lookup tables (item ids, categorical ids) with sparse gradients, stepped by a lazy Adam
    # (torch's SparseAdam): a step costs the rows it touches, not the whole table.  None: on when
    # the tables hold more than SPARSE_ABOVE rows (a million items or users), off below.
    sparse_ids: bool | None = None
    hidden: list[int] = [256]
    output_dim: int = Field(64, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # Multi-interest user tower (ComiRec-SA): > 1 gives each user that many vectors, each read by
    # self-attention from the longest pooled history; each is searched and the lists merged by score.
    interests: int = Field(1, ge=1, le=16)


class NegativesConfig(_Strict):
    """Mixed negative sampling for the sampled-softmax loss (see ``embrecall.training.negatives``).

    In-batch negatives are always there; the others are added per batch (global) or per
    positive (hard, exposure).  ``*_weight`` scales a source's share of the softmax denominator.
    """

    global_count: int = Field(0, ge=0)  # shared by the batch, drawn by popularity**global_alpha
    global_alpha: float = Field(0.75, ge=0.0)
    hard_count: int = Field(0, ge=0)  # per positive, from items sharing its hard_column value
    hard_column: str | None = None  # an item attribute such as category or city
    hard_alpha: float = Field(0.75, ge=0.0)
    exposure_count: int = Field(0, ge=0)  # per positive, from items shown to the user and not clicked
    in_batch_weight: float = Field(1.0, gt=0.0)
    global_weight: float = Field(1.0, gt=0.0)
    hard_weight: float = Field(1.0, gt=0.0)
    exposure_weight: float = Field(1.0, gt=0.0)

    @model_validator(mode="after")
    def _hard_needs_column(self) -> NegativesConfig:
        if self.hard_count and not self.hard_column:
            raise ValueError("train.negatives.hard_count > 0 needs train.negatives.hard_column (e.g. 'category')")
        return self


class TrainConfig(_Strict):
    """Loss, optimiser and schedule of two-tower training."""

    # sampled_softmax: in-batch positives (plus [train.negatives]) as candidates; full_softmax: every
    # catalog item each step (affordable up to a few 10^4 items); bce: sampled negatives per positive.
    loss: Literal["sampled_softmax", "full_softmax", "bce"] = "sampled_softmax"
    temperature: float = Field(0.05, gt=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)  # softmax losses: share of the target spread over candidates
    logq_strength: float = Field(1.0, ge=0.0)  # 0 turns the popularity correction off
    remove_accidental_hits: bool = True
    num_negatives: int = Field(20, ge=1)  # bce: sampled negatives per positive
    negative_alpha: float = Field(0.75, ge=0.0)  # bce: negatives drawn by popularity**alpha
    optimizer: Literal["adam", "adamw", "sgd", "adagrad"] = "adam"
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(512, ge=2)  # training pairs per step (sequence windows: whole windows adding up to it)
    epochs: int = Field(10, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)  # at most this many steps an epoch (logs too large for whole ones)
    patience: int = Field(2, ge=1)  # epochs without validation gain before stopping
    early_stop_k: int = Field(50, ge=1)  # early stopping watches validation HR@early_stop_k
    valid_users: int | None = Field(10_000, ge=100)  # validation users sampled for each epoch's check; None: all
    max_seconds: float | None = Field(None, gt=0)  # choosing epochs stops before an epoch would pass this budget
    refit: bool = True  # retrain on train + validation for the best epoch count (the protocol's final model)
    seed: int = 0
    resume: bool = False  # continue from the newest checkpoint in the run's checkpoint folder
    # PyTorch threads; None: the CPUs this process may use (affinity, cgroup quota, OMP_NUM_THREADS)
    # less the cores other processes keep busy, checked before each epoch. Oversubscribed threads
    # spin and can train several times slower than one thread.
    threads: int | None = Field(None, ge=1)
    # Where the model, batches and losses live: auto (a GPU when PyTorch sees one, else the CPU),
    # cpu, cuda (under torchrun: the GPU of the rank's LOCAL_RANK) or cuda:N.
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    negatives: NegativesConfig = NegativesConfig()

    @model_validator(mode="after")
    def _settings_of_the_loss(self) -> TrainConfig:
        """A setting the chosen loss does not read is refused: it would look applied and not be."""
        fields = type(self).model_fields
        unread = [
            name
            for name, losses in LOSS_SETTINGS.items()
            if self.loss not in losses and getattr(self, name) != fields[name].get_default(call_default_factory=True)
        ]
        if unread:
            raise ValueError(
                f"train.loss = '{self.loss}' does not read train.{', train.'.join(unread)}; remove "
                f"{'them' if len(unread) > 1 else 'it'} or choose a loss that reads "
                f"{'them' if len(unread) > 1 else 'it'}"
            )
        return self


# The train settings only some losses read (every other train setting applies to every loss).
LOSS_SETTINGS: dict[str, set[str]] = {
    "num_negatives": {"bce"},
    "negative_alpha": {"bce"},
    "logq_strength": {"sampled_softmax"},
    "remove_accidental_hits": {"sampled_softmax"},
    "negatives": {"sampled_softmax"},
    "label_smoothing": {"sampled_softmax", "full_softmax"},
}


class IndexConfig(_Strict):
    """The ANN index over item vectors (FAISS, inner product)."""

    # ivf_sq8: IVF over 8-bit scalar-quantised vectors: a quarter of the memory and faster scans;
    # the live index re-scores what it returns with the full vectors.
    kind: Literal["flat", "hnsw", "ivf", "ivf_sq8"] = "flat"
    hnsw_m: int = Field(32, ge=4)
    ef_construction: int = Field(200, ge=8)
    ef_search: int = Field(256, ge=8)
    ivf_nlist: int | None = Field(None, ge=1)  # None: about 4 * sqrt(items), at most items / 39
    nprobe: int = Field(16, ge=1)


class Item2VecConfig(_Strict):
    """Skip-gram word2vec on session-cut click sequences (see ``embrecall.models.item2vec``)."""

    dim: int = Field(64, ge=1)
    window: int = Field(20, ge=1)
    negative: int = Field(10, ge=1)
    ns_exponent: float = 0.75
    epochs: int = Field(10, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)  # at most this many steps an epoch (logs too large for whole ones)
    min_count: int = Field(5, ge=1)  # rarer items get noisy vectors that crowd the top of the ranking
    sample: float = Field(1e-4, ge=0.0)  # word2vec's down-sampling of very frequent items
    session_gap: int = Field(3600, ge=1)  # seconds of inactivity that start a new session
    group_column: str | None = None  # one model per value of this event column (city, business line)
    history: int = Field(10, ge=1)  # last N clicks make the user vector
    decay: float = Field(0.7, gt=0.0, le=1.0)  # weight of the click p steps back: decay**p
    category_column: str | None = None  # item attribute: one query per category of the history
    max_categories: int = Field(3, ge=1)
    seed: int = 0


class ItemCFConfig(_Strict):
    """Item-to-item co-occurrence with popularity normalisation (see ``embrecall.models.itemcf``)."""

    window: int = Field(10, ge=1)  # pairs up to this many steps apart in a user's history
    pair_decay: float = Field(0.9, gt=0.0, le=1.0)  # a pair d steps apart counts pair_decay**(d-1)
    alpha: float = Field(0.5, ge=0.0, le=1.0)  # sim = c_ij / (n_i**alpha * n_j**(1-alpha))
    neighbours: int = Field(200, ge=1)  # kept per item (the inverted lists)
    history: int = Field(10, ge=1)  # last N items score the candidates
    decay: float = Field(0.8, gt=0.0, le=1.0)


class SwingConfig(_Strict):
    """Swing item-to-item similarity (see ``embrecall.models.swing``)."""

    alpha: float = Field(1.0, gt=0.0)  # sim sums w_u w_v / (alpha + |I_u & I_v|) over user pairs
    max_users: int = Field(50, ge=2)  # each item's latest users counted (the work grows with its square)
    max_items: int = Field(50, ge=2)  # each user's latest distinct items counted
    neighbours: int = Field(200, ge=1)  # kept per item (the inverted lists)
    history: int = Field(10, ge=1)  # last N items score the candidates
    decay: float = Field(0.8, gt=0.0, le=1.0)


class EaseConfig(_Strict):
    """EASE, closed form, scored from a recency-weighted recent profile (see ``embrecall.models.ease``)."""

    l2: float = Field(500.0, gt=0.0)  # ridge strength (500: best of 50/200/500 on ml-100k validation)
    history: int = Field(50, ge=1)  # last N items make the profile
    decay: float = Field(0.9, gt=0.0, le=1.0)  # weight of the item p steps back: decay**p
    min_count: int = Field(1, ge=1)  # items with fewer training events are left out of the model
    max_items: int = Field(20_000, ge=1)  # a dense item x item matrix: larger catalogs are refused


class ChannelsConfig(_Strict):
    """The recall channels besides the two-tower model, and how they are merged."""

    item2vec: Item2VecConfig = Item2VecConfig()
    itemcf: ItemCFConfig = ItemCFConfig()
    swing: SwingConfig = SwingConfig()
    ease: EaseConfig = EaseConfig()
    # The served list: channel -> weight (rrf) or slot share (quota); `embrecall train` fits and
    # stores each, `evaluate` measures it as `served`, `tune --served` chooses it on validation.
    serve: dict[str, float] = {"two_tower": 2.0, "itemcf": 1.0}
    merge_mode: Literal["quota", "rrf"] = "rrf"
    rrf_offset: float = Field(60.0, gt=0.0)  # rrf: score = weight / (rrf_offset + rank)
    merge_depth: int = Field(2, ge=1)  # rrf: each channel contributes its top merge_depth * k
    # The channel that fills the slots the others leave empty (a strict filter, a cold user); always stored.
    fallback: str | None = "popular"
    dither_epsilon: float = Field(1.0, ge=1.0)  # > 1 reorders by log-rank noise for diversity; 1 is off

    @model_validator(mode="after")
    def _quotas(self) -> ChannelsConfig:
        unknown = sorted(set(self.serve) - set(CHANNELS))
        if unknown or not any(v > 0 for v in self.serve.values()) or any(v < 0 for v in self.serve.values()):
            raise ValueError(
                f"channels.serve maps channels {list(CHANNELS)} to non-negative weights, one at least positive; "
                f"got {self.serve}"
            )
        if self.fallback is not None and self.fallback not in STORED:
            raise ValueError(f"channels.fallback is one of {list(STORED)} or none; got {self.fallback!r}")
        return self


class EvalConfig(_Strict):
    """The ranking cut-offs of BENCHMARK.md."""

    ks: list[Annotated[int, Field(ge=1, le=10_000)]] = Field([10, 20, 50, 100, 200, 500, 1000], min_length=1)
    cold_quantile: float = Field(0.5, gt=0.0, lt=1.0)  # cold-item evaluation: test period starts at this time quantile
    per: list[str] = []  # event columns (such as scene) whose every value also gets its own row of metrics


class SearchDim(_Strict):
    """One tuned setting: a range (``low``..``high``, on a log scale with ``log``; whole numbers
    with ``int``) or a list of ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    int: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SearchDim:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("a search dimension needs either low and high, or choices")
        if self.choices is None and (self.low > self.high or (self.log and self.low <= 0)):  # type: ignore[operator]
            raise ValueError(f"search range {self.low}..{self.high} is empty (or not positive on a log scale)")
        return self


_METRIC = r"^((HR|NDCG|coverage)@[1-9][0-9]*|MRR)$"


class TuneConfig(_Strict):
    """``embrecall tune``: Optuna search over config fields, scored on validation only."""

    channel: str = "two_tower"
    metric: str = Field("NDCG@20", pattern=_METRIC)  # HR@K, NDCG@K, MRR...
    # `tune --channel served`: the served list may not lose to the best single channel on any of these.
    served_metrics: list[Annotated[str, Field(pattern=_METRIC)]] = Field(["HR@10", "HR@100", "HR@500"], min_length=1)
    trials: int = Field(40, ge=1)
    timeout_s: float = Field(1800.0, gt=0.0)  # the study stops starting trials after this
    max_epochs: int = Field(10, ge=1)  # a two-tower trial trains at most this many epochs
    # Config field (as for --set) -> its range; empty: the channel's default space (embrecall.tune).
    space: dict[str, SearchDim] = {}
    seed: int = 0


class UpdateConfig(_Strict):
    """Training on from a published version (``train --from``, ``embrecall update``)."""

    # Passes over the new events and their replay.  More passes over the same new events overfit
    # them: on ml-100k's replay, 10 (a full retrain's count) lost 9 % of next-period HR@100.
    epochs: int = Field(1, ge=1)
    # Older events replayed beside the new ones, as a multiple of the new events (drawn anew each
    # epoch): what keeps an update from forgetting what the new events do not show.  Chosen on the
    # first half of ml-100k's replay (bench/replay.py): 1 lost 8 %, 4 lost 1.6 %, 10 matched.
    replay: float = Field(10.0, ge=0.0)
    # Rotate the new version's space onto its parent's (orthogonal Procrustes on the shared items'
    # vectors): a cached user vector of one version then scores the other's items; no score
    # within the version changes.  A warm update's space stays close without it.
    align: bool = False


class Config(_Strict):
    """A complete run."""

    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    features: FeaturesConfig = FeaturesConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    index: IndexConfig = IndexConfig()
    evaluate: EvalConfig = EvalConfig()
    channels: ChannelsConfig = ChannelsConfig()
    tune: TuneConfig = TuneConfig()
    update: UpdateConfig = UpdateConfig()
    out: Path = Path("runs")

    @model_validator(mode="after")
    def _interests_need_a_history(self) -> Config:
        if self.model.interests > 1 and not any(
            isinstance(f, HistoryFeature) and f.max_len > 1 for f in self.features.user
        ):
            raise ValueError(
                f"model.interests = {self.model.interests} reads the interests from a pooled history: "
                "add a [[features.user]] of kind 'history' with max_len > 1"
            )
        return self

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Config:
        for f in self.features.user:
            if isinstance(f, SequenceFeature) and self.model.item_embedding_dim % f.heads:
                raise ValueError(
                    f"features.user.{f.name}: heads ({f.heads}) must divide "
                    f"model.item_embedding_dim ({self.model.item_embedding_dim})"
                )
        return self


def _format_validation(err: ValidationError, origin: str) -> ConfigError:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-after", "tagged-union")))
        got = e.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {loc or '(top level)'}: {e['msg']}{got_s}")
    return ConfigError(f"invalid configuration in {origin}:\n" + "\n".join(lines))


def validated(model: type[M], raw: Any, origin: str) -> M:
    """``model`` from ``raw``, its validation errors said as a ConfigError that names each field."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise _format_validation(err, origin) from None


def config_from_dict(raw: Any, origin: str = "config") -> Config:
    """Validate a plain dict (as read from TOML/YAML) into a Config, with field-named errors."""
    return validated(Config, raw, origin)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _list_item(node: list[Any], part: str) -> int | None:
    """The position of ``part`` in a list: an index, or the name of a feature (``recent``)."""
    if part.isdigit():
        return int(part) if int(part) < len(node) else None
    return next((i for i, x in enumerate(node) if isinstance(x, dict) and x.get("name") == part), None)


def set_field(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Set the field at dotted ``key`` to ``value``; list items by index or by name
    (``features.user.2.dim``, ``features.user.recent.max_len``)."""
    node: Any = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if isinstance(node, list):
            at = _list_item(node, part)
            if at is None:
                raise ConfigError(f"field '{key}': '{part}' is neither an index nor a name in a list of {len(node)}")
            node = node[at]
        else:
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"field '{key}': '{last}' is not an index of a list of {len(node)}")
        node[int(last)] = value
    else:
        node[last] = value
    return raw


def get_field(raw: dict[str, Any], key: str) -> Any:
    """The value at dotted ``key``, or None where the path does not exist."""
    node: Any = raw
    for part in key.split("."):
        if isinstance(node, list) and (at := _list_item(node, part)) is not None:
            node = node[at]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` entries (value parsed as YAML: numbers, booleans, lists) into ``raw``."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form section.field=value")
        set_field(raw, key, _parse_value(value))
    return raw


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or YAML file into a dict; relative data paths are resolved against the file's folder."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            raw = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path}: expected a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:].upper()}: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a table of sections at the top level")
    data = raw.get("data", {})
    for key in ("path",):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str((path.parent / data[key]).resolve())
    for table in ("users", "items"):
        t = data.get(table)
        if isinstance(t, dict) and isinstance(t.get("path"), str) and not Path(t["path"]).is_absolute():
            t["path"] = str((path.parent / t["path"]).resolve())
    return raw


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config file (or the demo defaults when ``path`` is None) and apply overrides."""
    raw = read_config_file(Path(path)) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    return config_from_dict(raw, str(path) if path else "defaults + overrides")
