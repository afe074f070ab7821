"""Clients of the SMART devices: the launcher, the `smart` command line, Taurus panels."""
