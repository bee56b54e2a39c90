"""Tests of the dataset registry posejax.data.real.datasets (the datasets themselves have their own
test files)."""

import importlib

import pytest

from posejax.data.real import datasets

CALLS = []


# This module doubles as a registered dataset module.
def builder(data_dir, **options):
  return ("builder", data_dir, options)


def prepare(manual_dir, data_dir, **options):
  CALLS.append(("prepare", manual_dir, data_dir, options))
  return "prepared"


def prepared_source(data_dir, **options):
  return lambda stream, index: {"stream": stream, "index": index, "data_dir": data_dir,
                                **options}


@pytest.fixture
def registered(monkeypatch):
  monkeypatch.setitem(datasets.DATASETS, "fake", datasets.DatasetInfo(
      __name__, ("test",), "https://example.org"))
  monkeypatch.setenv("HOME", "/home/someone")
  CALLS.clear()


def test_every_registered_module_provides_the_three_functions():
  for name, info in datasets.DATASETS.items():
    module = importlib.import_module(info.module)
    for function in ("builder", "prepare", "prepared_source"):
      assert callable(getattr(module, function)), (name, function)


def test_dispatch_expands_user_paths(registered):
  assert datasets.prepare("fake", "~/raw", "~/data", image_size=8) == "prepared"
  assert CALLS == [("prepare", "/home/someone/raw", "/home/someone/data", {"image_size": 8})]
  assert datasets.builder("fake", "~/data", image_size=8) == (
      "builder", "/home/someone/data", {"image_size": 8})
  assert datasets.source("fake", "~/data", image_size=8)("test", 3) == {
      "stream": "test", "index": 3, "data_dir": "/home/someone/data", "image_size": 8}


def test_unknown_dataset_lists_the_registered_ones(registered):
  with pytest.raises(KeyError, match=r"Unknown dataset 'fak'; registered: \[.*'fake'"):
    datasets.source("fak", "/tmp")


def test_combine_routes_each_stream():
  source = datasets.combine({"train_2d": lambda s, i: {"from": "a", "index": i},
                             "test": lambda s, i: {"from": "b", "index": i}})
  assert source("train_2d", 4) == {"from": "a", "index": 4}
  assert source("test", 5) == {"from": "b", "index": 5}
  with pytest.raises(KeyError, match="No source for stream 'train_multiview'; streams: "
                                     r"\['test', 'train_2d'\]"):
    source("train_multiview", 0)


ACTIONS = ("Walking", "Sitting")


def test_streams_source_maps_streams_names_actions_and_knows_sizes(registered, monkeypatch):
  def sized_source(data_dir, **options):
    source = lambda stream, index: {"stream": stream, "index": index,  # noqa: E731
                                    "action": index % 2, **options}
    source.sizes = {"test": 7}
    return source

  monkeypatch.setitem(globals(), "prepared_source", sized_source)  # this module is "fake"
  source = datasets.streams_source({"validation": "fake:test", "test": "fake"}, "~/data",
                                   {"fake": {"image_size": 8}})
  assert source("validation", 3) == {"stream": "test", "index": 3, "action": "Sitting",
                                     "image_size": 8}
  assert source("test", 4)["action"] == "Walking"
  assert source.sizes == {"validation": 7, "test": 7}
