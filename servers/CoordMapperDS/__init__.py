"""CoordMapperDS: Tango device server package (thin shell in device.py, plain-Python core beside it)."""
