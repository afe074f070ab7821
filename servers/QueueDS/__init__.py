"""QueueDS: the night queue of targets (thin Tango shell in device.py, plain-Python cores beside it)."""
