import os

from metalearn.data import cache_dir, data_roots


def test_explicit_root_wins_over_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("METALEARN_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("METALEARN_CACHE", str(tmp_path / "cache"))
    assert data_roots(tmp_path / "flag") == [tmp_path / "flag", tmp_path / "cache" / "data"]


def test_environment_may_list_several_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("METALEARN_DATA", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    monkeypatch.setenv("METALEARN_CACHE", str(tmp_path / "cache"))
    assert data_roots() == [tmp_path / "a", tmp_path / "b", tmp_path / "cache" / "data"]


def test_without_configuration_the_user_cache_is_used(monkeypatch):
    monkeypatch.delenv("METALEARN_DATA", raising=False)
    monkeypatch.delenv("METALEARN_CACHE", raising=False)
    assert data_roots() == [cache_dir() / "data"]
    assert "metalearn" in str(cache_dir())
