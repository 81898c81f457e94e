"""Importing this package registers every ``*_model.py`` module of it in BasicSR's registries."""
from uniremoval.utils.registration import import_modules

_modules = import_modules(__file__, __name__, '_model.py')
