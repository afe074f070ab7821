"""What the servers share: errors, JSON argument checking, image I/O, Tango glue."""
