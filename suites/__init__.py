"""Suite definitions shipped with convbench (TOML files beside this module)."""
