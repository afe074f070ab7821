"""The SMART Sardana macros and their helpers, installed as the package ``macros``.

A MacroServer whose MacroPath names this folder loads each ``smart_*.py`` as a macro library
(files starting with ``_``, such as this one, it skips); the libraries import their helpers as
``macros.<module>``, so nothing depends on the MacroPath being on ``sys.path``.
"""
