"""An in-memory stand-in for the few MlflowClient registry calls promotion makes: every call is atomic (one lock) and
sleeps a random moment before and after, so threads interleave in many orders. Version numbers are max + 1."""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass, field

from mlflow.exceptions import MlflowException


@dataclass
class Version:
    name: str
    version: str
    tags: dict = field(default_factory=dict)
    description: str = ""


class Page(list):
    token = None


class FakeRegistry:
    def __init__(self, seed: int = 0, max_sleep: float = 0.002):
        self.lock, self.rng, self.max_sleep = threading.Lock(), random.Random(seed), max_sleep
        self.models: dict[str, dict] = {}  # name -> {"versions": {int: Version}, "aliases": {alias: str}}

    def _call(self, fn):
        time.sleep(self.rng.random() * self.max_sleep)
        with self.lock:
            out = fn()
        time.sleep(self.rng.random() * self.max_sleep)
        return out

    def _model(self, name):
        if name not in self.models:
            raise MlflowException(f"no registered model {name}")
        return self.models[name]

    def create_registered_model(self, name, description=None):
        def op():
            if name in self.models:
                raise MlflowException(f"{name} exists")
            self.models[name] = {"versions": {}, "aliases": {}}
        return self._call(op)

    def get_registered_model(self, name):
        return self._call(lambda: type("RM", (), {"name": name, "aliases": dict(self._model(name)["aliases"])}))

    def create_model_version(self, name, source, run_id=None, tags=None, description=None):
        def op():
            versions = self._model(name)["versions"]
            v = max(versions, default=0) + 1
            versions[v] = Version(name, str(v), dict(tags or {}))
            return versions[v]
        return self._call(op)

    def get_model_version(self, name, version):
        def op():
            mv = self._model(name)["versions"].get(int(version))
            if mv is None:
                raise MlflowException(f"no version {version}")
            return Version(mv.name, mv.version, dict(mv.tags), mv.description)
        return self._call(op)

    def get_model_version_by_alias(self, name, alias):
        def op():
            v = self._model(name)["aliases"].get(alias)
            if v is None:
                raise MlflowException(f"no alias {alias}")
            mv = self._model(name)["versions"][int(v)]
            return Version(mv.name, mv.version, dict(mv.tags), mv.description)
        return self._call(op)

    def set_registered_model_alias(self, name, alias, version):
        return self._call(lambda: self._model(name)["aliases"].__setitem__(alias, str(version)))

    def set_model_version_tag(self, name, version, key, value):
        return self._call(lambda: self._model(name)["versions"][int(version)].tags.__setitem__(key, value))

    def update_model_version(self, name, version, description=None):
        def op():
            self._model(name)["versions"][int(version)].description = description
        return self._call(op)

    def search_model_versions(self, filter_string, page_token=None, max_results=None):
        name = re.search(r"name = '([^']*)'", filter_string).group(1)
        tags = dict(re.findall(r"tags\.(\w+) = '([^']*)'", filter_string))

        def op():
            found = [Version(mv.name, mv.version, dict(mv.tags)) for mv in self.models.get(name, {}).get(
                "versions", {}).values() if all(mv.tags.get(k) == v for k, v in tags.items())]
            return Page(found)
        return self._call(op)
