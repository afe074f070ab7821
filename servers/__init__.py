"""SMART on Tango device servers: one sub-package per server, plus ``common``."""
