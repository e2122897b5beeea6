"""Registry tests: a package, so its conftest never replaces another folder's ``conftest``."""
