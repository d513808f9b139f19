"""User inputs encoded once per profile agree with encoding the user table row by row, for known,
unknown and timed users."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from embrecall import Bundle, train
from embrecall.config import TimeFeature
from embrecall.features.profiles import UserProfiles
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("profiles"), "train.epochs=1")
    cfg.features.user.append(TimeFeature(kind="time", name="hour", part="hour"))
    return Bundle.load(train(cfg, show_progress=False).bundle)


def test_profiles_give_the_vectors_of_the_raw_user_table(bundle):
    profiles = UserProfiles(bundle.encoders, bundle.users)
    enc = bundle.encoders
    known, other = bundle.users.index[:2]
    item = bundle.encoders.catalog_[3]
    cases = [
        (known, (), {"timestamp": 1_700_000_000}),
        (other, (item,), {"timestamp": 1_700_030_000}),
        ("nobody", (item,), {"timestamp": 1_700_000_000}),
        ("nobody", (), {}),
    ]
    histories = [profiles.history(user) + recent for user, recent, _ in cases]
    contexts = [bundle.query(user, context).context for user, _, context in cases]
    got = bundle.user_tower(profiles.inputs([user for user, _, _ in cases], histories, contexts))  # one batch
    for (user, _, _), history, context, vector in zip(cases, histories, contexts, got):
        expected = bundle.user_tower(
            enc.encode_users(
                pd.Index([user], dtype=object),
                bundle.users,
                enc.context_frame([context]),
                enc.history_matrix([history]),
            )
        )[0]
        np.testing.assert_allclose(vector, expected, atol=1e-6)
    assert known in profiles and "nobody" not in profiles
    assert profiles.history(known) == tuple(bundle.users.at[known, "items"])
