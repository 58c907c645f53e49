"""The embedded model's cache folder: a file where the folder should be is one line (exit 2 from the CLI),
and a partial copy of a model folder (no recipe.json) is kept aside and rebuilt, not renamed over."""
import json
import shutil

import pytest

from aent_cli.errors import UserError
from aent_cli.models.tiny import ensure_tiny_model, recipe, recipe_key


def test_a_file_as_the_cache_folder_is_a_user_error(tmp_path, monkeypatch):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    monkeypatch.setenv("AENT_CACHE_DIR", str(blocker))
    with pytest.raises(UserError, match=r"cannot use the cache folder .*afile.*AENT_CACHE_DIR"):
        ensure_tiny_model(2, 0)


def test_a_partial_model_folder_is_kept_aside_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("AENT_CACHE_DIR", str(tmp_path))
    target = tmp_path / f"tiny-{recipe_key(recipe(2, 0))}"
    target.mkdir()
    (target / "stray.txt").write_text("a copy interrupted half-way")
    assert ensure_tiny_model(2, 0) == target
    assert json.loads((target / "recipe.json").read_text())["steps"] == 2
    (aside,) = tmp_path.glob(f"{target.name}.incomplete-*")
    assert (aside / "stray.txt").read_text() == "a copy interrupted half-way"


def test_a_damaged_cached_model_names_its_file_and_the_fix(tmp_path, monkeypatch, tiny_cache):
    from aent_cli.config import compose_config
    from aent_cli.models.loading import load_policy

    copy = tmp_path / tiny_cache.name
    shutil.copytree(tiny_cache, copy)
    with open(copy / "model.safetensors", "r+b") as f:
        f.truncate(10)
    monkeypatch.setenv("AENT_CACHE_DIR", str(tmp_path))
    with pytest.raises(UserError) as info:
        load_policy(compose_config([]).model)
    assert f"{copy / 'model.safetensors'} cannot be read" in str(info.value)
    assert f"delete {copy} and it is built again" in str(info.value)
