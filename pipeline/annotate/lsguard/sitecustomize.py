"""Loaded at start-up by the Label Studio process that mvfer starts (this folder is on its PYTHONPATH).

It appends mvfer's guard (mvfer_ls_guard.AnnotatorGuard) to Label Studio's middleware as soon as
Label Studio's settings module has run. Why this way: a settings module of our own that imports
Label Studio's cannot work, because Label Studio reads `django.conf.settings` while its own settings
module is still being imported. Imports nothing from the pipeline.
"""

import importlib.abc
import importlib.machinery
import sys

SETTINGS = ("label_studio.core.settings.label_studio", "core.settings.label_studio")
GUARD = "mvfer_ls_guard.AnnotatorGuard"


class _AppendGuard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in SETTINGS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            if GUARD not in module.MIDDLEWARE:
                module.MIDDLEWARE.append(GUARD)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _AppendGuard())
