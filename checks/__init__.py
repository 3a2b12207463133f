"""The library that does and checks the migration work; plain code, no pytest imports."""
