"""cocotb testbenches, imported by the simulator process (module names passed to the runner)."""
