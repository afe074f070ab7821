"""RegistrationDS: image registration between named image slots (Tango-free core).

The device shell (``device.py``) uses :class:`~servers.RegistrationDS.core.RegistrationCore`
and the argument models in :mod:`servers.RegistrationDS.args`.
"""
