"""MovieLens readers on the published formats: 100K from the shared folder, the others on tiny
files written here in the same formats (no MovieLens rows are copied into the project)."""

from __future__ import annotations

import pytest

from embrecall.data.movielens import read_movielens
from embrecall.errors import DataError


def test_ml100k_as_published(ml100k):
    data = read_movielens(ml100k)
    assert len(data.events) == 100_000
    assert data.events["user_id"].nunique() == 943 and data.events["item_id"].nunique() == 1682
    assert data.items.loc["1", "title"] == "Toy Story (1995)"
    assert data.items.loc["1", "genres"] == "Animation|Children's|Comedy"
    assert len(data.users) == 943 and data.users.loc["2", "occupation"] == "other"


def test_dat_format(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    (tmp_path / "movies.dat").write_text(
        "10::Film: The Sequel (1999)::Action|Comedy\n20::Other (2000)::Drama\n", encoding="latin-1"
    )
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    data = read_movielens(tmp_path)
    assert data.events["item_id"].tolist() == ["10", "20", "10"]
    assert data.items.loc["10", "title"] == "Film: The Sequel (1999)"
    assert data.items.loc["10", "year"] == "1999"
    assert data.users.loc["2", "zip"] == "70072"


def test_csv_format(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n")
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,"Toy, Story (1995)",Comedy\n3,X (1995),(no genres listed)\n'
    )
    data = read_movielens(tmp_path)
    assert data.events["timestamp"].tolist() == [964982703, 964981247]
    assert data.items.loc["1", "title"] == "Toy, Story (1995)"
    assert data.items.loc["3", "genres"] == ""


def test_tags_of_the_latest_releases_become_an_item_column(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,A (1995),Comedy\n3,B (1995),Drama\n")
    (tmp_path / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n1,1,Pixar,1\n2,1,pixar ,2\n2,1,fun|kids,3\n3,1,funny,4\n"
    )
    data = read_movielens(tmp_path)
    assert data.items.loc["1", "tags"] == "pixar|fun kids|funny"  # most used first, then by name
    assert data.items.loc["3", "tags"] == ""


def test_not_a_movielens_folder(tmp_path):
    with pytest.raises(DataError, match="no MovieLens ratings file found"):
        read_movielens(tmp_path)


def test_malformed_dat_line(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::5::978300760\n")
    (tmp_path / "movies.dat").write_text("10::Only a title\n")
    with pytest.raises(DataError, match=r"movies\.dat, row 1: expected 3 fields"):
        read_movielens(tmp_path)
