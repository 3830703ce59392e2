"""Edit-R1 platform library."""
