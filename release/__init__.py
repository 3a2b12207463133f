"""The one-file release: the entry point of dist/stackblitz-migrate.pex (scripts/build-release)."""
